// Starts a jobgraph server of its own for an example's check: on SQLite in a temporary folder,
// on a free port of this machine.
//
//   const server = await startJobgraph('target/debug/jobgraph', ['--trusted-documents', file]);
//   // server.url, server.token (the first-start administrator's), await server.stop()
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Starts `binary serve` with `args` and `env`; its URL, first-start token and a stop function. */
export async function startJobgraph(binary, args = [], env = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'jobgraph-example-'));
  const port = await freePort();
  const child = spawn(binary, ['serve', ...args], {
    env: {
      ...process.env,
      JOBGRAPH_DATA_DIR: join(dir, 'data'),
      JOBGRAPH_LISTEN: `127.0.0.1:${port}`,
      DATABASE_URL: '',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const stop = async () => {
    child.kill();
    await rm(dir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 120 && child.exitCode === null; i++) {
    const token = output.match(/jg_[A-Za-z0-9]+/)?.[0];
    const up = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (token && up) return { url, token, stop };
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  await stop();
  throw new Error(`jobgraph did not start:\n${output}`);
}
