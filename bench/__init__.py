"""Benchmarks of the DMP FHIR server over real HTTP (see ``bench/README.md``)."""
