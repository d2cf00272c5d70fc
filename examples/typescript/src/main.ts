// What a frontend does with jobgraph, typed end to end:
//
//   npm start -- http://127.0.0.1:8000 jg_...
//
// lists the tools with their prices, creates a workspace and grants it credits (the token must
// be a platform administrator's for that), submits a `sleep` job, follows it by subscription
// until it finishes and reads its history. Exits with status 1 unless the job COMPLETED.
import type { OperationResult } from '@urql/core';
import { connect } from './client.js';
import type { JobStatus, JobUpdatedSubscription } from './gql/graphql.js';
import { CreateWorkspace, GrantCredits, JobHistory, JobUpdated, SubmitJob, Tools } from './operations.js';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: npm start -- <server url> <token>');
  process.exit(2);
}

/** The data of a result, or its errors thrown. */
function data<T>(result: OperationResult<T>): T {
  if (result.error || !result.data) throw result.error ?? new Error('no data');
  return result.data;
}

const FINAL: JobStatus[] = ['COMPLETED', 'FAILED', 'TIMEOUT', 'CANCELLED'];
const { client, close } = connect(url, token);
try {
  const { tools } = data(await client.query(Tools, {}));
  for (const tool of tools) {
    const settings = tool.price.settings.map((s) => ` + ${s.perUnit}/${s.name}`).join('');
    console.log(
      `tool ${tool.name.padEnd(14)} ${tool.version.padEnd(6)} ${tool.price.base} credits${settings}`,
    );
  }

  const { createWorkspace } = data(
    await client.mutation(CreateWorkspace, { name: `Typed client ${new Date().toISOString()}` }),
  );
  const workspace = createWorkspace.workspace;
  const { grantCredits } = data(
    await client.mutation(GrantCredits, { workspaceId: workspace.id, amount: 100 }),
  );
  console.log(`workspace ${workspace.name}: ${grantCredits.workspace.creditBalance} credits`);

  const { submitJob } = data(
    await client.mutation(SubmitJob, { workspaceId: workspace.id, tool: 'sleep', settings: { seconds: 1 } }),
  );
  const job = submitJob.job;
  console.log(`submitted ${job.id}: ${job.status}, ${job.creditCost} credits`);

  // jobUpdated sends the job as it is, then each change: a late subscriber sees the end too.
  const last = await new Promise<JobUpdatedSubscription['jobUpdated']>((resolve, reject) => {
    const { unsubscribe } = client.subscription(JobUpdated, { id: job.id }).subscribe((result) => {
      if (result.error) return reject(result.error);
      const update = data(result).jobUpdated;
      console.log(
        `  ${update.status.padEnd(10)} ${(update.progress * 100).toFixed(0).padStart(3)}% ${update.stage ?? ''}`,
      );
      if (FINAL.includes(update.status)) {
        unsubscribe();
        resolve(update);
      }
    });
  });

  const history = data(await client.query(JobHistory, { id: job.id })).job;
  // @ts-expect-error: a field the query does not select is a type error.
  void history.stauts;
  for (const event of history.timeline) {
    console.log(`  ${event.at} ${event.status.padEnd(10)} attempt ${event.attempt} ${event.stage ?? ''}`);
  }
  console.log(
    `${history.name}: ${history.status} in ${history.durationSeconds?.toFixed(1)} s, result ${JSON.stringify(history.result)}`,
  );
  if (last.status !== 'COMPLETED' || history.status !== 'COMPLETED' || history.timeline.length < 3) {
    console.error(`FAILED: the job ended ${last.status}, history ${history.status}`);
    process.exitCode = 1;
  }
} finally {
  await close();
}
