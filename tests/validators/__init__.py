"""Node.js FHIR validators used by the test suite."""
