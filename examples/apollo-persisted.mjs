// Apollo Client with its persisted-queries link against jobgraph, as a frontend would use it.
//
//   node apollo-persisted.mjs path/to/jobgraph
//
// Starts two servers of its own on SQLite (in temporary folders), and checks:
// - automatic persisted queries: a query's first run sends its hash alone, by GET, learns
//   PERSISTED_QUERY_NOT_FOUND and sends the document; its next run is one GET with the hash
//   only; a mutation goes by POST the same way;
// - trusted documents: with `--trusted-documents` holding the manifest of this client's
//   operations (written here as Apollo's manifest generator would), they run by hash at the
//   first request, and an operation not in it fails with DOCUMENT_NOT_TRUSTED.
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client/core/index.js';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries/index.js';
import { addTypenameToDocument } from '@apollo/client/utilities/index.js';
import { print } from 'graphql';
import { startJobgraph } from './jobgraph-server.mjs';

const [binary] = process.argv.slice(2);
if (!binary) {
  console.error('usage: node apollo-persisted.mjs <jobgraph binary>');
  process.exit(2);
}

const ME = gql`query Me { viewer { user { email } } }`;
const WORKSPACES = gql`query Workspaces { viewer { workspaces(first: 5) { nodes { name } } } }`;
const CREATE = gql`mutation Create($name: String!) {
  createWorkspace(input: { name: $name }) { workspace { id name } }
}`;

const sha256 = (text) => createHash('sha256').update(text).digest('hex');
// The text the client sends for a document: with `__typename` added, as the cache does.
const body = (document) => print(addTypenameToDocument(document));

function check(condition, message) {
  if (!condition) {
    console.error(`FAILED: ${message}`);
    process.exitCode = 1;
    throw new Error(message);
  }
}

/** Starts jobgraph with `args`, without workers: these checks run no job. */
const start = (args) => startJobgraph(binary, args, { JOBGRAPH_WORKERS: '0' });

/** An Apollo client whose requests are recorded in `sent`. */
function client(server, sent) {
  const recordingFetch = async (uri, options) => {
    const url = new URL(uri);
    sent.push({
      method: options.method ?? 'GET',
      hasDocument: url.searchParams.has('query') || String(options.body ?? '').includes('"query"'),
    });
    return fetch(uri, options);
  };
  const link = createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
    new HttpLink({
      uri: `${server.url}/graphql`,
      headers: { authorization: `Bearer ${server.token}` },
      fetch: recordingFetch,
    }),
  );
  return new ApolloClient({
    link,
    cache: new InMemoryCache(),
    defaultOptions: { query: { fetchPolicy: 'network-only' } },
  });
}

async function automatic() {
  const server = await start([]);
  try {
    const sent = [];
    const apollo = client(server, sent);
    const first = await apollo.query({ query: ME });
    check(first.data.viewer.user.email === 'admin@localhost', `first run: ${JSON.stringify(first)}`);
    check(sent.length === 2, `first run: two requests, got ${JSON.stringify(sent)}`);
    check(sent[0].method === 'GET' && !sent[0].hasDocument, `first request: hash only by GET: ${JSON.stringify(sent)}`);
    check(sent[1].hasDocument, `second request: the document: ${JSON.stringify(sent)}`);
    sent.length = 0;
    const again = await apollo.query({ query: ME });
    check(again.data.viewer.user.email === 'admin@localhost', `second run: ${JSON.stringify(again)}`);
    check(sent.length === 1 && sent[0].method === 'GET' && !sent[0].hasDocument,
      `second run: one GET with the hash only, got ${JSON.stringify(sent)}`);
    sent.length = 0;
    for (const name of ['apollo one', 'apollo two']) {
      const created = await apollo.mutate({ mutation: CREATE, variables: { name } });
      check(created.data.createWorkspace.workspace.name === name, `mutation: ${JSON.stringify(created)}`);
    }
    check(sent.every((request) => request.method === 'POST'), `mutations by POST: ${JSON.stringify(sent)}`);
    check(sent.length === 3 && !sent[2].hasDocument,
      `the second mutation sends its hash only: ${JSON.stringify(sent)}`);
    console.log('automatic persisted queries: ok');
  } finally {
    await server.stop();
  }
}

async function trusted() {
  const dir = await mkdtemp(join(tmpdir(), 'jobgraph-manifest-'));
  const manifest = join(dir, 'persisted-query-manifest.json');
  await writeFile(manifest, JSON.stringify({
    format: 'apollo-persisted-query-manifest',
    version: 1,
    operations: [
      { id: sha256(body(ME)), name: 'Me', type: 'query', body: body(ME) },
      { id: sha256(body(CREATE)), name: 'Create', type: 'mutation', body: body(CREATE) },
    ],
  }));
  const server = await start(['--trusted-documents', manifest]);
  try {
    const sent = [];
    const apollo = client(server, sent);
    const me = await apollo.query({ query: ME });
    check(me.data.viewer.user.email === 'admin@localhost', `trusted query: ${JSON.stringify(me)}`);
    check(sent.length === 1 && !sent[0].hasDocument, `a trusted query runs by hash at once: ${JSON.stringify(sent)}`);
    const created = await apollo.mutate({ mutation: CREATE, variables: { name: 'trusted' } });
    check(created.data.createWorkspace.workspace.name === 'trusted', `trusted mutation: ${JSON.stringify(created)}`);
    let refused;
    try {
      await apollo.query({ query: WORKSPACES });
    } catch (error) {
      refused = error;
    }
    const codes = [
      ...(refused?.graphQLErrors ?? []),
      ...(refused?.networkError?.result?.errors ?? []),
    ].map((error) => error.extensions?.code);
    check(codes.includes('DOCUMENT_NOT_TRUSTED'), `an untrusted query is refused: ${refused} ${JSON.stringify(codes)}`);
    console.log('trusted documents: ok');
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await automatic();
await trusted();
