"""The directory of professionals: loading the national directory (Annuaire Santé, RPPS).

CONTRACT §3: the server's directory is ``Practitioner`` (idNatPs, the TRE_G15 profession, the
TRE_R38 specialty) written by ``ADM``; it holds what a token cannot prove about someone else — R6
reads there that the doctor designated médecin traitant is a médecin. ``dmp-server directory
import`` fills it from the two public forms of the national directory:

- :mod:`.rpps` — the extraction file ``PS_LibreAcces_Personne_activite`` (pipe-separated, one line
  per activity of a professional);
- :mod:`.bundles` — FHIR Bundles of Practitioner and PractitionerRole as the ANS "Annuaire Santé"
  IG (the FHIR API of the directory) shapes them.

Both become the same resources, written as ``ADM`` through the FHIR service (validation, the DMP
rules, the same code path as ``PUT`` over HTTP) by :mod:`.importer`, idempotently: a Practitioner
is found again by its idNatPs, a PractitionerRole by the activity identifier given to it, and an
unchanged resource is not written again.
"""
