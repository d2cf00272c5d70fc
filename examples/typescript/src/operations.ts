import { graphql } from './gql/index.js';

export const Tools = graphql(`
  query Tools {
    tools {
      name
      title
      version
      timeoutSeconds
      price {
        base
        perKilobyte
        per1kResidues
        settings {
          name
          perUnit
        }
      }
    }
  }
`);

export const CreateWorkspace = graphql(`
  mutation CreateWorkspace($name: String!) {
    createWorkspace(input: { name: $name }) {
      workspace {
        id
        name
        creditBalance
      }
    }
  }
`);

export const GrantCredits = graphql(`
  mutation GrantCredits($workspaceId: ID!, $amount: Int!) {
    grantCredits(input: { workspaceId: $workspaceId, amount: $amount }) {
      workspace {
        id
        creditBalance
      }
    }
  }
`);

export const SubmitJob = graphql(`
  mutation SubmitJob($workspaceId: ID!, $tool: String!, $settings: JSON, $idempotencyKey: String) {
    submitJob(
      input: { workspaceId: $workspaceId, tool: $tool, settings: $settings, idempotencyKey: $idempotencyKey }
    ) {
      replayed
      job {
        id
        status
        creditCost
      }
    }
  }
`);

export const JobUpdated = graphql(`
  subscription JobUpdated($id: ID!) {
    jobUpdated(id: $id) {
      id
      status
      stage
      progress
    }
  }
`);

export const JobHistory = graphql(`
  query JobHistory($id: ID!) {
    job(id: $id) {
      id
      name
      toolName
      status
      creditCost
      refunded
      result
      createdAt
      startedAt
      finishedAt
      durationSeconds
      timeline {
        status
        stage
        message
        progress
        attempt
        at
      }
    }
  }
`);
