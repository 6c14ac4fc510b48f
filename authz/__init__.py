"""Access tokens, SMART scopes, the DMP policy and the audit trail.

The server core already takes the policy's decision where it will plug in: every request carries
an :class:`storage.query.AccessScope` whose per-type filter the store adds inside each query.
"""
