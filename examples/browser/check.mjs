// Checks the browser page in headless Chromium: it lists the workspace's jobs, and a job
// submitted meanwhile appears and reaches COMPLETED on the page. The page is served on
// `page port` (any free one by default), whose origin the server must list in --cors-origins
// to accept its websocket.
//
//   jobgraph serve --cors-origins http://127.0.0.1:8080 &
//   node browser/check.mjs http://127.0.0.1:8000 jg_... ws_01... 8080
//
// Chromium comes from `CHROMIUM` or /usr/bin/chromium (Debian's `chromium` package).
import { createServer } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, workspaceId, pagePort = '0'] = process.argv.slice(2);
if (!workspaceId) {
  console.error('usage: node browser/check.mjs <server url> <token> <workspace id> [page port]');
  process.exit(2);
}
const here = new URL('.', import.meta.url);
const files = {
  '/': ['jobs.html', 'text/html'],
  '/graphql-ws.js': ['../node_modules/graphql-ws/umd/graphql-ws.min.js', 'text/javascript'],
};
const server = createServer(async (request, response) => {
  const file = files[new URL(request.url, 'http://x').pathname];
  if (!file) { response.writeHead(request.url === '/favicon.ico' ? 204 : 404).end(); return; }
  response.writeHead(200, { 'content-type': file[1] });
  response.end(await readFile(new URL(file[0], here)));
});
await new Promise((resolve) => server.listen(Number(pagePort), '127.0.0.1', resolve));
const page_url = `http://127.0.0.1:${server.address().port}/?` +
  new URLSearchParams({ server: base, token, workspace: workspaceId });

async function graphql(query, variables) {
  const response = await fetch(base + '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

const profile = await mkdtemp(join(tmpdir(), 'jobgraph-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on('console', (message) => console.log('page:', message.text()));
  await page.goto(page_url);
  await page.locator('#state', { hasText: 'live' }).waitFor({ timeout: 15000 });
  const before = await page.locator('tbody tr').count();
  console.log(`the page lists ${before} jobs and is live`);

  const { submitJob } = await graphql(
    `mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: "sleep", name: "From the check", settings: {seconds: 1}}) { job { id } } }`,
    { ws: workspaceId },
  );
  const row = page.locator(`tr[data-job-id="${submitJob.job.id}"]`);
  await row.waitFor({ timeout: 10000 });
  console.log(`${submitJob.job.id} appeared: ${await row.locator('.status').textContent()}`);
  await row.locator('.status', { hasText: 'COMPLETED' }).waitFor({ timeout: 30000 });
  console.log(`${submitJob.job.id} reached COMPLETED on the page`);
  if ((await row.locator('.name').textContent()) !== 'From the check') throw new Error('wrong name');
} catch (error) {
  console.error(error);
  failed = true;
} finally {
  await browser.close();
  server.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
