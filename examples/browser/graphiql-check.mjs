// Checks the GraphiQL that jobgraph serves at /graphql, in headless Chromium with every request
// to another host refused: the page loads, a token typed into the Headers tab authenticates a
// query over HTTP and a subscription over the websocket, and a job submitted meanwhile shows up
// in the subscription's result.
//
//   node browser/graphiql-check.mjs http://127.0.0.1:8000 jg_... ws_01...
//
// Chromium comes from `CHROMIUM` or /usr/bin/chromium (Debian's `chromium` package).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, workspaceId] = process.argv.slice(2);
if (!workspaceId) {
  console.error('usage: node browser/graphiql-check.mjs <server url> <token> <workspace id>');
  process.exit(2);
}
const server = new URL(base);

async function submitJob(name) {
  const response = await fetch(new URL('/graphql', base), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: `mutation($ws: ID!, $name: String!) { submitJob(input: {workspaceId: $ws, tool: "sleep", name: $name, settings: {seconds: 1}}) { job { id } } }`,
      variables: { ws: workspaceId, name },
    }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data.submitJob.job.id;
}

const profile = await mkdtemp(join(tmpdir(), 'jobgraph-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    // Names resolve to nothing: only the server's own address can be reached.
    `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${server.hostname}`],
});
// And every request to another origin is aborted, and remembered.
const elsewhere = [];
await browser.route('**', (route) => {
  const url = new URL(route.request().url());
  if (url.origin === server.origin) return route.continue();
  elsewhere.push(url.href);
  return route.abort('blockedbyclient');
});
const problems = [];
let failed = false;
try {
  const page = await browser.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text());
    console.log(`page ${message.type()}:`, message.text());
  });
  page.on('pageerror', (error) => problems.push(String(error)));
  const sockets = [];
  page.on('websocket', (socket) => {
    const frames = { sent: [], received: [] };
    sockets.push({ url: socket.url(), frames });
    socket.on('framesent', (frame) => frames.sent.push(JSON.parse(frame.payload)));
    socket.on('framereceived', (frame) => frames.received.push(JSON.parse(frame.payload)));
  });

  const response = await page.goto(new URL('/graphql', base).href);
  console.log(`GET /graphql: ${response.status()}, ${response.headers()['content-security-policy']}`);
  const queryEditor = page.locator('.graphiql-query-editor .CodeMirror');
  await queryEditor.waitFor({ timeout: 15000 });
  console.log('GraphiQL is up');

  // The token, typed into the prefilled `{"Authorization": "Bearer "}` of the Headers tab.
  const headersEditor = page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');
  await headersEditor.click();
  await page.keyboard.press('Control+End');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('End');
  await page.keyboard.press('ArrowLeft');
  await page.keyboard.type(token);
  const headers = await headersEditor.evaluate((element) => element.CodeMirror.getValue());
  if (JSON.parse(headers).Authorization !== `Bearer ${token}`) throw new Error(`headers: ${headers}`);

  const run = async (query) => {
    await queryEditor.evaluate((element, value) => element.CodeMirror.setValue(value), query);
    await page.locator('.graphiql-execute-button').click();
  };
  const result = () => page.locator('.result-window .CodeMirror')
    .evaluate((element) => element.CodeMirror.getValue());
  const resultContains = async (text, timeout) => {
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      const value = await result();
      if (value.includes(text)) return value;
      await page.waitForTimeout(100);
    }
    return null;
  };

  await run('{ viewer { isAuthenticated workspaces(first: 50) { edges { node { id name } } } } }');
  const queried = await resultContains(workspaceId, 10000);
  if (!queried || !queried.includes('"isAuthenticated": true')) {
    throw new Error(`the query did not show the workspace: ${await result()}`);
  }
  console.log('the query over HTTP shows the workspace, authenticated');

  await run(`subscription { workspaceJobEvents(workspaceId: "${workspaceId}") { kind jobId status job { name } } }`);
  const submitted = [];
  let shown = null;
  // The subscription starts when the server has read the `subscribe` message; a job submitted
  // before that is not an event of it, so submit again until one shows.
  for (let attempt = 1; attempt <= 5 && !shown; attempt += 1) {
    submitted.push(await submitJob(`From the GraphiQL check ${attempt}`));
    for (const id of submitted) {
      shown = await resultContains(`"jobId": "${id}"`, id === submitted.at(-1) ? 4000 : 1);
      if (shown) break;
    }
  }
  if (!shown) throw new Error(`no event shown for ${submitted}: ${await result()}`);
  console.log(`the subscription shows an event: ${shown.replace(/\s+/g, ' ')}`);

  const socket = sockets.find((s) => new URL(s.url).pathname === '/graphql');
  if (!socket) throw new Error('no websocket to /graphql');
  const init = socket.frames.sent.find((message) => message.type === 'connection_init');
  if (init?.payload?.Authorization !== `Bearer ${token}`) {
    throw new Error(`connection_init carried ${JSON.stringify(init)}`);
  }
  if (!socket.frames.received.some((message) => message.type === 'connection_ack')) {
    throw new Error('the websocket was not acknowledged');
  }
  console.log(`the websocket ${socket.url} sent the token in connection_init`);
  if (sockets.some((s) => new URL(s.url).host !== server.host)) {
    throw new Error(`a websocket to another host: ${sockets.map((s) => s.url)}`);
  }
  if (elsewhere.length) throw new Error(`requests to other hosts: ${elsewhere}`);
  if (problems.length) throw new Error(`page errors: ${problems.join('\n')}`);
  console.log('no request left the server, no error on the page');
} catch (error) {
  console.error(error);
  failed = true;
} finally {
  await browser.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
