// Live-update delivery seen by real clients: SUBSCRIBERS graphql-ws clients (Node, `ws`), in
// THREADS threads of this process, each subscribe to `workspaceJobEvents` of one workspace on a
// running `jobgraph serve --workers 0`. Then CHANGES queued jobs are cancelled one after the
// other over HTTP, each once every subscriber got the one before: every cancellation is one
// status change that every subscriber must receive. Reports the latency from the change (the
// job's `updatedAt`, taken in the transaction just before it commits) to each client's receipt,
// and, with SERVER_PID, the server's resident memory per subscriber.
//
//   URL=http://127.0.0.1:8000/graphql TOKEN=jg_... SERVER_PID=123 node subscribe.mjs
//
// TOKEN (a platform administrator's) sets the workspace up. With MEMBERS (comma-separated
// `email token` pairs of other users), each is made a member and the subscribers are spread
// over TOKEN and theirs in turn: that many audiences, each with its own view of the jobs.
//
// Prints a human summary, then one JSON line starting with {"subscribers".
import { readFileSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const EVENTS = `subscription($ws: ID!) {
  workspaceJobEvents(workspaceId: $ws) { kind status jobId job { updatedAt } }
}`;

/** Milliseconds since the epoch, to the microsecond, of an RFC 3339 time. */
function epochMs(text) {
  const match = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!match) throw new Error(`not a time: ${text}`);
  return Date.parse(match[1] + match[3]) + Number(match[2] ?? 0) * 1000;
}

function now() {
  return performance.timeOrigin + performance.now();
}

async function graphql(query, variables = {}) {
  const response = await fetch(process.env.URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${process.env.TOKEN}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

function rssKib(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, p) {
  return sorted[Math.round((sorted.length - 1) * p)];
}

async function main() {
  const subscribers = Number(process.env.SUBSCRIBERS ?? 10000);
  const changes = Number(process.env.CHANGES ?? 20);
  const threads = Number(process.env.THREADS ?? 2);
  const pid = process.env.SERVER_PID;
  const ws = (
    await graphql('mutation { createWorkspace(input: {name: "live bench"}) { workspace { id } } }')
  ).createWorkspace.workspace.id;
  await graphql(
    'mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 1000000}) { workspace { id } } }',
    { ws },
  );
  const members = (process.env.MEMBERS ?? '')
    .split(',')
    .filter((pair) => pair.trim())
    .map((pair) => pair.trim().split(/\s+/));
  for (const [email] of members) {
    await graphql(
      'mutation($ws: ID!, $email: String!) { addMember(input: {workspaceId: $ws, email: $email, role: MEMBER}) { membership { id } } }',
      { ws, email },
    );
  }
  const tokens = [process.env.TOKEN, ...members.map(([, token]) => token)];
  // One warm-up change, then the measured ones.
  const jobs = [];
  for (let i = 0; i <= changes; i++) {
    const data = await graphql(
      'mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: "sleep", settings: {seconds: 1}}) { job { id } } }',
      { ws },
    );
    jobs.push(data.submitJob.job.id);
  }
  await sleep(500);
  const rssBefore = pid ? rssKib(pid) : 0;

  // Per job, how many subscribers got its cancellation; and how many are connected.
  const counts = new Int32Array(new SharedArrayBuffer(4 * (jobs.length + 1)));
  const connected = jobs.length;
  const opening = now();
  const workers = [];
  let first = 0;
  for (let t = 0; t < threads; t++) {
    const share = Math.floor(subscribers / threads) + (t < subscribers % threads ? 1 : 0);
    workers.push(
      new Worker(new URL(import.meta.url), {
        workerData: { url: process.env.URL, tokens, first, ws, jobs, counts, share },
      }),
    );
    first += share;
  }
  const failures = [];
  for (const worker of workers) worker.on('error', (err) => failures.push(err));
  const waitUntil = async (what, done, seconds) => {
    const deadline = now() + seconds * 1000;
    while (!done()) {
      if (failures.length) throw failures[0];
      if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(2);
    }
  };
  await waitUntil(
    `${subscribers} connections`,
    () => Atomics.load(counts, connected) >= subscribers,
    180,
  );
  const openedIn = (now() - opening) / 1000;

  const cancel = async (i) => {
    await graphql('mutation($id: ID!) { cancelJob(input: {jobId: $id}) { job { id } } }', {
      id: jobs[i],
    });
    await waitUntil(
      `every subscriber to get change ${i} (${Atomics.load(counts, i)} of ${subscribers} did)`,
      () => Atomics.load(counts, i) >= subscribers,
      60,
    );
  };
  // Warm-up: every subscription is live once every client has seen a change.
  await cancel(0);
  const rssAfter = pid ? rssKib(pid) : 0;
  const measuring = now();
  for (let i = 1; i <= changes; i++) await cancel(i);
  const measuredIn = (now() - measuring) / 1000;

  const latencies = [];
  await Promise.all(
    workers.map(
      (worker) =>
        new Promise((resolve) => {
          worker.once('message', (message) => {
            for (const latency of message.latencies) latencies.push(latency);
            resolve();
          });
          worker.postMessage('report');
        }),
    ),
  );
  latencies.sort((a, b) => a - b);
  const expected = changes * subscribers;
  const result = {
    subscribers,
    changes,
    deliveries: latencies.length,
    expected,
    opened_s: Number(openedIn.toFixed(1)),
    measured_s: Number(measuredIn.toFixed(2)),
    median_ms: Number(percentile(latencies, 0.5).toFixed(1)),
    p90_ms: Number(percentile(latencies, 0.9).toFixed(1)),
    p99_ms: Number(percentile(latencies, 0.99).toFixed(1)),
    max_ms: Number(percentile(latencies, 1).toFixed(1)),
    server_kib_per_subscriber: pid
      ? Number(((rssAfter - rssBefore) / subscribers).toFixed(1))
      : null,
  };
  console.log(
    `subscribers: ${subscribers} of ${tokens.length} users in ${threads} threads, opened in ${openedIn.toFixed(1)} s`,
  );
  console.log(
    `status changes: ${changes}, deliveries: ${latencies.length} (expected ${expected}), in ${measuredIn.toFixed(2)} s`,
  );
  console.log(
    `latency from the change to the client: median ${result.median_ms} ms, p90 ${result.p90_ms} ms, p99 ${result.p99_ms} ms, max ${result.max_ms} ms`,
  );
  if (pid) {
    console.log(
      `server memory: ${(rssBefore / 1024).toFixed(1)} MiB before, ${(rssAfter / 1024).toFixed(1)} MiB with the subscribers: ${result.server_kib_per_subscriber} KiB per subscriber`,
    );
  }
  console.log(JSON.stringify(result));
  if (latencies.length !== expected) {
    console.error(`${expected - latencies.length} deliveries are missing`);
    process.exit(1);
  }
  process.exit(0);
}

/** One thread's clients: `share` connections, each with one subscription, the `first`th on. */
async function clients({ url, tokens, first, ws, jobs, counts, share }) {
  const index = new Map(jobs.map((id, i) => [id, i]));
  const connected = jobs.length;
  const latencies = [];
  // Latencies of the warm-up change are not kept.
  const warmUp = jobs[0];
  const open = (n) => {
    const token = tokens[(first + n) % tokens.length];
    const client = createClient({
      url: url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      lazy: false,
      retryAttempts: 0,
      on: { connected: () => Atomics.add(counts, connected, 1) },
      onNonLazyError: (err) => {
        throw new Error(`client ${n} failed: ${JSON.stringify(err?.reason ?? err?.message ?? err)}`);
      },
    });
    client.subscribe(
      { query: EVENTS, variables: { ws } },
      {
        next: ({ data, errors }) => {
          const arrived = now();
          if (errors) throw new Error(`subscription errors: ${JSON.stringify(errors)}`);
          const event = data.workspaceJobEvents;
          if (event.status !== 'CANCELLED') return;
          const i = index.get(event.jobId);
          if (i === undefined) return;
          if (event.jobId !== warmUp) latencies.push(arrived - epochMs(event.job.updatedAt));
          Atomics.add(counts, i, 1);
        },
        error: (err) => {
          throw new Error(`subscription failed: ${JSON.stringify(err?.reason ?? err?.message ?? err)}`);
        },
        complete: () => {},
      },
    );
  };
  parentPort.on('message', () => parentPort.postMessage({ latencies }));
  // Open in waves, as a crowd of browsers would.
  for (let n = 0; n < share; n++) {
    open(n);
    if (n % 50 === 49) await sleep(10);
  }
}

if (isMainThread) {
  await main();
} else {
  await clients(workerData);
}
