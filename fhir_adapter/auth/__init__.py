"""SMART Backend Services (SMART App Launch 2.2): the client registry
(:mod:`fhir_adapter.auth.clients`), scopes (:mod:`fhir_adapter.auth.scopes`) and the token
service that checks client assertions and issues access tokens (:mod:`fhir_adapter.auth.tokens`)."""
