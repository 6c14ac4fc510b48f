"""What the server declares about itself and checks against FHIR: the interactions each type
allows, the R4 invariants, ``$validate``, and the API descriptions generated from the
CapabilityStatement (OpenAPI, a browsable page)."""
