/* eslint-disable */
import * as types from './graphql.js';
import type { TypedDocumentNode as DocumentNode } from '@graphql-typed-document-node/core';

/**
 * Map of all GraphQL operations in the project.
 *
 * This map has several performance disadvantages:
 * 1. It is not tree-shakeable, so it will include all operations in the project.
 * 2. It is not minifiable, so the string of a GraphQL query will be multiple times inside the bundle.
 * 3. It does not support dead code elimination, so it will add unused operations.
 *
 * Therefore it is highly recommended to use the babel or swc plugin for production.
 * Learn more about it here: https://the-guild.dev/graphql/codegen/plugins/presets/preset-client#reducing-bundle-size
 */
type Documents = {
    "\n  query Tools {\n    tools {\n      name\n      title\n      version\n      timeoutSeconds\n      price {\n        base\n        perKilobyte\n        per1kResidues\n        settings {\n          name\n          perUnit\n        }\n      }\n    }\n  }\n": typeof types.ToolsDocument,
    "\n  mutation CreateWorkspace($name: String!) {\n    createWorkspace(input: { name: $name }) {\n      workspace {\n        id\n        name\n        creditBalance\n      }\n    }\n  }\n": typeof types.CreateWorkspaceDocument,
    "\n  mutation GrantCredits($workspaceId: ID!, $amount: Int!) {\n    grantCredits(input: { workspaceId: $workspaceId, amount: $amount }) {\n      workspace {\n        id\n        creditBalance\n      }\n    }\n  }\n": typeof types.GrantCreditsDocument,
    "\n  mutation SubmitJob($workspaceId: ID!, $tool: String!, $settings: JSON, $idempotencyKey: String) {\n    submitJob(\n      input: { workspaceId: $workspaceId, tool: $tool, settings: $settings, idempotencyKey: $idempotencyKey }\n    ) {\n      replayed\n      job {\n        id\n        status\n        creditCost\n      }\n    }\n  }\n": typeof types.SubmitJobDocument,
    "\n  subscription JobUpdated($id: ID!) {\n    jobUpdated(id: $id) {\n      id\n      status\n      stage\n      progress\n    }\n  }\n": typeof types.JobUpdatedDocument,
    "\n  query JobHistory($id: ID!) {\n    job(id: $id) {\n      id\n      name\n      toolName\n      status\n      creditCost\n      refunded\n      result\n      createdAt\n      startedAt\n      finishedAt\n      durationSeconds\n      timeline {\n        status\n        stage\n        message\n        progress\n        attempt\n        at\n      }\n    }\n  }\n": typeof types.JobHistoryDocument,
};
const documents: Documents = {
    "\n  query Tools {\n    tools {\n      name\n      title\n      version\n      timeoutSeconds\n      price {\n        base\n        perKilobyte\n        per1kResidues\n        settings {\n          name\n          perUnit\n        }\n      }\n    }\n  }\n": types.ToolsDocument,
    "\n  mutation CreateWorkspace($name: String!) {\n    createWorkspace(input: { name: $name }) {\n      workspace {\n        id\n        name\n        creditBalance\n      }\n    }\n  }\n": types.CreateWorkspaceDocument,
    "\n  mutation GrantCredits($workspaceId: ID!, $amount: Int!) {\n    grantCredits(input: { workspaceId: $workspaceId, amount: $amount }) {\n      workspace {\n        id\n        creditBalance\n      }\n    }\n  }\n": types.GrantCreditsDocument,
    "\n  mutation SubmitJob($workspaceId: ID!, $tool: String!, $settings: JSON, $idempotencyKey: String) {\n    submitJob(\n      input: { workspaceId: $workspaceId, tool: $tool, settings: $settings, idempotencyKey: $idempotencyKey }\n    ) {\n      replayed\n      job {\n        id\n        status\n        creditCost\n      }\n    }\n  }\n": types.SubmitJobDocument,
    "\n  subscription JobUpdated($id: ID!) {\n    jobUpdated(id: $id) {\n      id\n      status\n      stage\n      progress\n    }\n  }\n": types.JobUpdatedDocument,
    "\n  query JobHistory($id: ID!) {\n    job(id: $id) {\n      id\n      name\n      toolName\n      status\n      creditCost\n      refunded\n      result\n      createdAt\n      startedAt\n      finishedAt\n      durationSeconds\n      timeline {\n        status\n        stage\n        message\n        progress\n        attempt\n        at\n      }\n    }\n  }\n": types.JobHistoryDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 *
 *
 * @example
 * ```ts
 * const query = graphql(`query GetUser($id: ID!) { user(id: $id) { name } }`);
 * ```
 *
 * The query argument is unknown!
 * Please regenerate the types.
 */
export function graphql(source: string): unknown;

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Tools {\n    tools {\n      name\n      title\n      version\n      timeoutSeconds\n      price {\n        base\n        perKilobyte\n        per1kResidues\n        settings {\n          name\n          perUnit\n        }\n      }\n    }\n  }\n"): (typeof documents)["\n  query Tools {\n    tools {\n      name\n      title\n      version\n      timeoutSeconds\n      price {\n        base\n        perKilobyte\n        per1kResidues\n        settings {\n          name\n          perUnit\n        }\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CreateWorkspace($name: String!) {\n    createWorkspace(input: { name: $name }) {\n      workspace {\n        id\n        name\n        creditBalance\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation CreateWorkspace($name: String!) {\n    createWorkspace(input: { name: $name }) {\n      workspace {\n        id\n        name\n        creditBalance\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation GrantCredits($workspaceId: ID!, $amount: Int!) {\n    grantCredits(input: { workspaceId: $workspaceId, amount: $amount }) {\n      workspace {\n        id\n        creditBalance\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation GrantCredits($workspaceId: ID!, $amount: Int!) {\n    grantCredits(input: { workspaceId: $workspaceId, amount: $amount }) {\n      workspace {\n        id\n        creditBalance\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation SubmitJob($workspaceId: ID!, $tool: String!, $settings: JSON, $idempotencyKey: String) {\n    submitJob(\n      input: { workspaceId: $workspaceId, tool: $tool, settings: $settings, idempotencyKey: $idempotencyKey }\n    ) {\n      replayed\n      job {\n        id\n        status\n        creditCost\n      }\n    }\n  }\n"): (typeof documents)["\n  mutation SubmitJob($workspaceId: ID!, $tool: String!, $settings: JSON, $idempotencyKey: String) {\n    submitJob(\n      input: { workspaceId: $workspaceId, tool: $tool, settings: $settings, idempotencyKey: $idempotencyKey }\n    ) {\n      replayed\n      job {\n        id\n        status\n        creditCost\n      }\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription JobUpdated($id: ID!) {\n    jobUpdated(id: $id) {\n      id\n      status\n      stage\n      progress\n    }\n  }\n"): (typeof documents)["\n  subscription JobUpdated($id: ID!) {\n    jobUpdated(id: $id) {\n      id\n      status\n      stage\n      progress\n    }\n  }\n"];
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query JobHistory($id: ID!) {\n    job(id: $id) {\n      id\n      name\n      toolName\n      status\n      creditCost\n      refunded\n      result\n      createdAt\n      startedAt\n      finishedAt\n      durationSeconds\n      timeline {\n        status\n        stage\n        message\n        progress\n        attempt\n        at\n      }\n    }\n  }\n"): (typeof documents)["\n  query JobHistory($id: ID!) {\n    job(id: $id) {\n      id\n      name\n      toolName\n      status\n      creditCost\n      refunded\n      result\n      createdAt\n      startedAt\n      finishedAt\n      durationSeconds\n      timeline {\n        status\n        stage\n        message\n        progress\n        attempt\n        at\n      }\n    }\n  }\n"];

export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}

export type DocumentType<TDocumentNode extends DocumentNode<any, any>> = TDocumentNode extends DocumentNode<  infer TType,  any>  ? TType  : never;