"""An independent in-memory FHIR server (Node, @medplum/fhir-router) for the pull tests."""
