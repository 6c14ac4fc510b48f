"""The MongoDB backend: the :class:`~storage.interface.Store` on a replica set or a sharded
cluster (``DMP_STORE=mongodb://…``; operator's guide in ``docs/mongodb.md``)."""
