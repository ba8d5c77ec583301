"""Tests of fhir_adapter.report."""
