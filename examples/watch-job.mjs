// Submit a job and follow it with the graphql-ws client (the library Apollo Client and urql
// use for subscriptions), in Node:
//
//   cd examples && npm ci
//   node watch-job.mjs http://127.0.0.1:8000 jg_... ws_01...
//
// It also follows the workspace's job events and the jobs indicator, and checks that the
// events arrive in order; exits with status 1 unless everything arrives.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [base, token, workspaceId] = process.argv.slice(2);
if (!workspaceId) {
  console.error('usage: node watch-job.mjs <server url> <token> <workspace id>');
  process.exit(2);
}
const client = createClient({
  url: base.replace(/^http/, 'ws') + '/graphql',
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
});

/** The results of one operation, as an async iterator. */
function operation(query, variables) {
  return client.iterate({ query, variables });
}

const FINAL = ['COMPLETED', 'FAILED', 'TIMEOUT', 'CANCELLED'];
// Where the workspace's events stand now: subscribing after it misses nothing from this moment,
// however long the subscription takes to start.
const now = (await operation(`query($ws: ID!) { workspace(id: $ws) { eventCursor } }`, { ws: workspaceId }).next())
  .value.data.workspace.eventCursor;
const events = operation(
  `subscription($ws: ID!, $after: String) { workspaceJobEvents(workspaceId: $ws, after: $after) { cursor kind jobId status } }`,
  { ws: workspaceId, after: now },
);
const counts = operation(
  `subscription($ws: ID!) { jobCounts(workspaceId: $ws) { active total } }`,
  { ws: workspaceId },
);
const initialCounts = (await counts.next()).value.data.jobCounts;

const submitted = await operation(
  `mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: "sleep", settings: {seconds: 1}}) { job { id status } } }`,
  { ws: workspaceId },
).next();
const job = submitted.value.data.submitJob.job;
console.log(`submitted ${job.id}: ${job.status}`);

const statuses = [];
for await (const result of operation(`subscription($id: ID!) { jobUpdated(id: $id) { status stage progress } }`, { id: job.id })) {
  const { status, stage, progress } = result.data.jobUpdated;
  console.log(`  ${status.padEnd(10)} ${(progress * 100).toFixed(0).padStart(3)}% ${stage ?? ''}`);
  statuses.push(status);
  if (FINAL.includes(status)) break;
}

const seen = [];
for await (const result of events) {
  const event = result.data.workspaceJobEvents;
  if (event.jobId !== job.id) continue;
  seen.push(event);
  if (FINAL.includes(event.status)) break;
}
const order = seen.map((e) => `${e.kind}:${e.status}`);
console.log('workspace events:', order.join(' '));

let finalCounts;
for await (const result of counts) {
  finalCounts = result.data.jobCounts;
  if (finalCounts.active === 0 && finalCounts.total === initialCounts.total + 1) break;
}
console.log('jobs indicator:', JSON.stringify(initialCounts), '->', JSON.stringify(finalCounts));
await client.dispose();

const cursors = seen.map((e) => Number(e.cursor.slice(2)));
const ok =
  statuses.at(-1) === 'COMPLETED' &&
  order[0] === 'CREATED:QUEUED' &&
  order.at(-1) === 'UPDATED:COMPLETED' &&
  order.includes('UPDATED:PROCESSING') &&
  cursors.every((c, i) => i === 0 || c > cursors[i - 1]);
if (!ok) {
  console.error('unexpected updates');
  process.exit(1);
}
console.log('ok');
