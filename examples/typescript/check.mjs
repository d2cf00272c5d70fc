// Runs the compiled client (`npm run build` first) against two servers of its own, on SQLite in
// temporary folders:
//
//   node check.mjs path/to/jobgraph
//
// - the default server (automatic persisted queries): the client runs, and afterwards the
//   server knows its Tools query by the hash in persisted-documents.json (a GET with that hash
//   alone answers), so the client sent its documents by that hash;
// - a server started with `--trusted-documents src/gql/persisted-documents.json`: the same
//   client runs unchanged, and a document that is not in the file is refused.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startJobgraph } from '../jobgraph-server.mjs';

const [binary] = process.argv.slice(2);
if (!binary) {
  console.error('usage: node check.mjs <jobgraph binary>');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const manifest = join(here, 'src/gql/persisted-documents.json');
const documents = JSON.parse(await readFile(manifest, 'utf8'));
const toolsHash = Object.entries(documents)
  .find(([, body]) => body.startsWith('query Tools '))[0]
  .replace(/^sha256:/, '');

function check(condition, message) {
  if (!condition) throw new Error(`FAILED: ${message}`);
}

/** Starts jobgraph with `args`; its URL, first-start token and a stop function. */
const start = (args) => startJobgraph(binary, args);

/** Runs the compiled client against `server`; resolves when it exits with status 0. */
function runClient(server) {
  const child = spawn(process.execPath, [join(here, 'dist/main.js'), server.url, server.token], {
    stdio: 'inherit',
  });
  return new Promise((resolve, reject) => {
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`FAILED: the client exited with ${code}`)),
    );
  });
}

async function graphql(server, search, init = {}) {
  const response = await fetch(`${server.url}/graphql${search}`, {
    ...init,
    headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
  });
  return response.json();
}

const automatic = await start([]);
try {
  await runClient(automatic);
  const extensions = JSON.stringify({ persistedQuery: { version: 1, sha256Hash: toolsHash } });
  const known = await graphql(automatic, `?extensions=${encodeURIComponent(extensions)}`);
  check(
    known.data?.tools?.length > 0,
    `the server knows Tools by its generated hash: ${JSON.stringify(known)}`,
  );
  console.log('automatic persisted queries: ok');
} finally {
  await automatic.stop();
}

const trusted = await start(['--trusted-documents', manifest]);
try {
  await runClient(trusted);
  const other = await graphql(trusted, '', {
    method: 'POST',
    body: JSON.stringify({ query: '{ tools { name } }' }),
  });
  check(
    other.errors?.[0]?.extensions?.code === 'DOCUMENT_NOT_TRUSTED',
    `another document is refused: ${JSON.stringify(other)}`,
  );
  console.log('trusted documents: ok');
} finally {
  await trusted.stop();
}
