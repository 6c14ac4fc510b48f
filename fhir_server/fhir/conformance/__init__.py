"""The API described from the CapabilityStatement, for tools (OpenAPI 3) and for people (a page
served without a token). What the statement declares comes from ``fhir_server.fhir.declarations``;
the R4 invariants and ``$validate`` live with validation and the interactions."""
