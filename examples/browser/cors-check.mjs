// Checks a page of another origin in headless Chromium: served from the origin the server
// lists in --cors-origins, it queries, submits a job, uploads a file, downloads it and opens a
// websocket; served from an origin not listed, each of those is refused by the browser.
//
//   jobgraph serve --cors-origins http://127.0.0.1:8080 &
//   node browser/cors-check.mjs http://127.0.0.1:8000 jg_... ws_01... 8080
//
// Chromium comes from `CHROMIUM` or /usr/bin/chromium (Debian's `chromium` package).
import { createServer } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, workspaceId, listedPort] = process.argv.slice(2);
if (!listedPort) {
  console.error('usage: node browser/cors-check.mjs <server url> <token> <workspace id> <page port>');
  process.exit(2);
}

/** Serves cors.html on `port` (0 for any); resolves to the page's URL. */
async function servePage(port) {
  const server = createServer(async (request, response) => {
    if (new URL(request.url, 'http://x').pathname !== '/') {
      response.writeHead(request.url === '/favicon.ico' ? 204 : 404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(await readFile(new URL('cors.html', import.meta.url)));
  });
  await new Promise((resolve) => server.listen(Number(port), '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${server.address().port}/?` +
    new URLSearchParams({ server: base, token, workspace: workspaceId });
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const servers = [];
const profile = await mkdtemp(join(tmpdir(), 'jobgraph-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const listed = await browser.newPage();
  listed.on('console', (message) => console.log('listed page:', message.text()));
  await listed.goto(await servePage(listedPort));
  const result = await listed.evaluate(() => run());
  console.log(await listed.locator('#log').textContent());
  expect(result.email, 'the query answered no user');
  expect(result.mutation === 'From another origin', `the mutation answered ${result.mutation}`);
  expect(result.uploaded === 'page.fa', `the upload answered ${result.uploaded}`);
  expect(result.disposition?.includes('page.fa'), `Content-Disposition: ${result.disposition}`);
  expect(result.same, 'the downloaded file differs from the uploaded one');
  expect(result.socket === 'acknowledged', 'the websocket was not acknowledged');
  console.log(`from ${new URL(listed.url()).origin}: query, mutation, upload, download and websocket answered`);

  const other = await browser.newPage();
  other.on('console', (message) => console.log('other page:', message.text()));
  await other.goto(await servePage(0));
  const refusals = await other.evaluate(async (fileUrl) => {
    const outcome = (promise) => promise.then(() => 'answered', (error) => String(error));
    const file = new File(['>s\nAC\n'], 'other.fa');
    return {
      query: await outcome(graphql('{ viewer { user { email } } }')),
      upload: await outcome(upload('mutation($file: Upload!) { __typename }', {}, file)),
      download: await outcome(download(fileUrl)),
      websocket: await outcome(websocket()),
    };
  }, result.downloadUrl);
  for (const [call, outcome] of Object.entries(refusals)) {
    expect(outcome !== 'answered', `from an origin not listed, the ${call} was answered`);
    console.log(`from ${new URL(other.url()).origin}: ${call} refused (${outcome})`);
  }
  expect(refusals.query.startsWith('TypeError'), `the query failed otherwise: ${refusals.query}`);
} catch (error) {
  console.error(error);
  failed = true;
} finally {
  await browser.close();
  for (const server of servers) server.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
