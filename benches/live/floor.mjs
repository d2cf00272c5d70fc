// The floor of the live bench on a machine: a server that does nothing but the protocol. It
// speaks just enough `graphql-transport-ws` (ack, subscribe) and answers the bench's few HTTP
// mutations with made-up ids; on `cancelJob` it writes one `next` message, serialized once,
// to every subscription, in the shape jobgraph sends. `subscribe.mjs` against it measures what
// the clients and the machine's sockets cost alone: no server can deliver faster to them.
//
//   node benches/live/floor.mjs 8123 &
//   URL=http://127.0.0.1:8123/graphql TOKEN=x SERVER_PID=$! node benches/live/subscribe.mjs
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 8123);
const subscriptions = new Set();
let jobs = 0;

/** Now as RFC 3339 with microseconds, as jobgraph writes `updatedAt`. */
function nowMicros() {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  const micros = String(Math.floor((ms - whole) * 1000)).padStart(3, '0');
  return new Date(whole).toISOString().replace('Z', `${micros}Z`);
}

function answer(query, variables) {
  if (query.includes('createWorkspace')) return { createWorkspace: { workspace: { id: 'ws_1' } } };
  if (query.includes('grantCredits')) return { grantCredits: { workspace: { id: 'ws_1' } } };
  if (query.includes('addMember')) return { addMember: { membership: { id: 'm_1' } } };
  if (query.includes('submitJob')) return { submitJob: { job: { id: `job_${++jobs}` } } };
  if (query.includes('cancelJob')) {
    const event = {
      kind: 'UPDATED',
      status: 'CANCELLED',
      jobId: variables.id,
      job: { updatedAt: nowMicros() },
    };
    const payload = JSON.stringify({ data: { workspaceJobEvents: event } });
    for (const [socket, id] of subscriptions) {
      socket.send(`{"type":"next","id":${JSON.stringify(id)},"payload":${payload}}`);
    }
    return { cancelJob: { job: { id: variables.id } } };
  }
  throw new Error(`not a mutation of the bench: ${query}`);
}

const server = createServer((request, response) => {
  if (request.method === 'GET') {
    response.end('ok');
    return;
  }
  let body = '';
  request.on('data', (chunk) => (body += chunk));
  request.on('end', () => {
    const { query, variables } = JSON.parse(body);
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify({ data: answer(query, variables ?? {}) }));
  });
});
const wss = new WebSocketServer({ server, handleProtocols: () => 'graphql-transport-ws' });
wss.on('connection', (socket) => {
  socket.on('message', (data) => {
    const message = JSON.parse(data);
    if (message.type === 'connection_init') socket.send('{"type":"connection_ack"}');
    if (message.type === 'subscribe') subscriptions.add([socket, message.id]);
  });
});
server.listen(port, '127.0.0.1');
