"""Bulk import of FHIR data into the DMP (``dmp-server import``): Bundles and NDJSON files, each
unit carried out as a request of the FHIR service, so validation, indexes, encryption, the DMP
rules and the trail apply as to any client; resumable.

- :mod:`.sources`: the files, read as units (a transaction or batch Bundle, one resource of a
  collection Bundle or of an NDJSON line).
- :mod:`.run`: the import itself: the patient each unit is about (the token's ``person_id``), the
  units already done (skipped on a restart), the outcome of each.
"""
