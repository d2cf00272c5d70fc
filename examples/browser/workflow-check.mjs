// Checks the workflow page in headless Chromium: a diamond workflow (a; b and c after a; d
// after b and c) submitted here is drawn as 4 boxes and 4 arrows, every box moves from
// waiting or running to COMPLETED through the `workflowUpdated` subscription (the page is
// never reloaded), and the page ends as the API says the workflow ended. The page is served
// on `page port` (any free one by default), whose origin the server must list in
// --cors-origins to accept its websocket; the server needs workers, so that the steps run.
//
//   jobgraph serve --cors-origins http://127.0.0.1:8080 &
//   node browser/workflow-check.mjs http://127.0.0.1:8000 jg_... ws_01... 8080
//
// Chromium comes from `CHROMIUM` or /usr/bin/chromium (Debian's `chromium` package).
import { createServer } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, workspaceId, pagePort = '0'] = process.argv.slice(2);
if (!workspaceId) {
  console.error('usage: node browser/workflow-check.mjs <server url> <token> <workspace id> [page port]');
  process.exit(2);
}
const here = new URL('.', import.meta.url);
const files = {
  '/': ['workflow.html', 'text/html'],
  '/graphql-ws.js': ['../node_modules/graphql-ws/umd/graphql-ws.min.js', 'text/javascript'],
};
const server = createServer(async (request, response) => {
  const file = files[new URL(request.url, 'http://x').pathname];
  if (!file) { response.writeHead(request.url === '/favicon.ico' ? 204 : 404).end(); return; }
  response.writeHead(200, { 'content-type': file[1] });
  response.end(await readFile(new URL(file[0], here)));
});
await new Promise((resolve) => server.listen(Number(pagePort), '127.0.0.1', resolve));

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

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// The diamond: `a` takes 2 seconds in three stages, so that the page sees it run.
const DIAMOND = {
  steps: [
    { name: 'a', tool: 'sleep', settings: { seconds: 2, stages: ['Reading', 'Thinking', 'Writing'] } },
    { name: 'b', tool: 'sleep', settings: { seconds: 0.5 }, after: ['a'] },
    { name: 'c', tool: 'noop', after: ['a'] },
    { name: 'd', tool: 'noop', after: ['b', 'c'] },
  ],
};
const COMPLETED_FILL = 'rgb(218, 251, 225)';

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
  let loads = 0;
  page.on('load', () => { loads += 1; });

  // Chromium is up before the workflow starts: the page opens while `a` still runs.
  const { submitWorkflow } = await graphql(
    `mutation($input: SubmitWorkflowInput!) { submitWorkflow(input: $input) { workflow { id } } }`,
    { input: { workspaceId, name: 'Diamond from the check', definition: DIAMOND } },
  );
  const id = submitWorkflow.workflow.id;
  console.log(`submitted ${id}`);
  await page.goto(`http://127.0.0.1:${server.address().port}/?` +
    new URLSearchParams({ server: base, token, workflow: id }));
  await page.locator('#state', { hasText: /live|ended/ }).waitFor({ timeout: 15000 });

  const boxes = page.locator('g.step');
  const arrows = page.locator('path.edge');
  assert(await boxes.count() === 4, `${await boxes.count()} boxes, not 4`);
  assert(await arrows.count() === 4, `${await arrows.count()} arrows, not 4`);
  const first = await boxes.evaluateAll((gs) => gs.map((g) => ({
    step: g.dataset.step,
    status: g.dataset.status,
    fill: getComputedStyle(g.querySelector('rect.box')).fill,
    x: g.transform.baseVal.consolidate().matrix.e,
  })));
  console.log('first drawn:', first.map((b) => `${b.step} ${b.status} ${b.fill}`).join(', '));
  const at = Object.fromEntries(first.map((b) => [b.step, b]));
  assert(at.a.x < at.b.x && at.b.x === at.c.x && at.c.x < at.d.x, 'the columns are not a | b c | d');
  assert(at.d.status === 'WAITING', `d is first ${at.d.status}, not WAITING`);
  assert(at.a.status !== 'COMPLETED' && at.a.fill !== COMPLETED_FILL, 'a was already completed when drawn');

  // `a`'s progress bar moves between 0 and 1 while it runs.
  await page.waitForFunction(() => {
    const p = Number(document.querySelector('g.step[data-step="a"]').dataset.progress);
    return p > 0 && p < 1;
  }, null, { timeout: 15000 });
  console.log('a ran: its progress bar moved');

  for (const step of ['a', 'b', 'c', 'd']) {
    await page.locator(`g.step[data-step="${step}"][data-status="COMPLETED"]`).waitFor({ timeout: 30000 });
  }
  await page.locator('#status', { hasText: 'COMPLETED' }).waitFor({ timeout: 10000 });
  assert(loads === 1, `the page loaded ${loads} times`);
  const last = await boxes.evaluateAll((gs) => gs.map((g) => ({
    step: g.dataset.step,
    status: g.querySelector('.status').textContent,
    seen: g.dataset.seen,
    jobId: g.dataset.jobId,
    fill: getComputedStyle(g.querySelector('rect.box')).fill,
    bar: Number(g.querySelector('rect.bar').getAttribute('width')),
    track: Number(g.querySelector('rect.track').getAttribute('width')),
  })));
  for (const box of last) {
    console.log(`${box.step}: ${box.seen.replaceAll(' ', ' -> ')} (${box.fill})`);
    const seen = box.seen.split(' ');
    assert(seen.length > 1 && seen[0] !== 'COMPLETED', `${box.step} was not seen before it completed`);
    assert(seen.at(-1) === 'COMPLETED' && box.status === 'COMPLETED', `${box.step} ends ${box.status}`);
    assert(box.fill === COMPLETED_FILL, `${box.step} is coloured ${box.fill}`);
    assert(box.bar === box.track, `${box.step}'s progress bar is not full`);
  }
  assert(last.find((b) => b.step === 'a').seen.includes('RUNNING'), 'a was never seen RUNNING');
  assert(last.find((b) => b.step === 'd').seen.startsWith('WAITING'), 'd was not seen WAITING first');

  // The page ends as the API says the workflow ended.
  const { workflow } = await graphql(
    `query($id: ID!) { workflow(id: $id) { status steps { name status job { id status } } edges { from to } } }`,
    { id },
  );
  assert(workflow.status === 'COMPLETED', `the workflow ended ${workflow.status}`);
  assert(await page.locator('#status').textContent() === workflow.status, 'the page shows another status');
  for (const step of workflow.steps) {
    const box = last.find((b) => b.step === step.name);
    assert(box?.status === step.status, `${step.name}: the page says ${box?.status}, the API ${step.status}`);
    assert(box.jobId === step.job.id, `${step.name}: the page shows job ${box.jobId}, the API ${step.job.id}`);
    assert(step.job.status === 'COMPLETED', `${step.name}'s job is ${step.job.status}`);
  }
  const drawn = (await arrows.evaluateAll((paths) => paths.map((p) => `${p.dataset.from}->${p.dataset.to}`))).sort();
  const api = [...new Set(workflow.edges.map((e) => `${e.from}->${e.to}`))].sort();
  assert(JSON.stringify(drawn) === JSON.stringify(api), `arrows ${drawn}, edges ${api}`);
  console.log(`${id} reached COMPLETED on the page, as in the API: arrows ${drawn.join(' ')}`);
} catch (error) {
  console.error(error);
  failed = true;
} finally {
  await browser.close();
  server.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
