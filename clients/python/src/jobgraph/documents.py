"""The GraphQL documents the client sends, checked against the server's schema by the tests."""

from __future__ import annotations

from gql import gql

FILE_FIELDS = """
fragment FileFields on File {
  id name size contentType sha256 role downloadUrl createdAt
}
"""

JOB_FIELDS = (
    """
fragment JobFields on Job {
  id name toolName toolVersion status stage progress settings result
  errorCode errorMessage attempt maxAttempts creditCost refunded priority
  createdAt queuedAt startedAt finishedAt durationSeconds url
  workspace { id }
  files { ...FileFields }
}
"""
    + FILE_FIELDS
)

TOOL_FIELDS = """
fragment ToolFields on Tool {
  name title description version settingsSchema timeoutSeconds maxAttempts
  inputs { name kind required maxBytes format description }
  price { base perKilobyte per1kResidues settings { name perUnit } }
}
"""

WORKSPACE_FIELDS = """
fragment WorkspaceFields on Workspace { id name creditBalance viewerRole }
"""

TOOLS = gql("query Tools { tools { ...ToolFields } }" + TOOL_FIELDS)

TOOL = gql("query Tool($name: String!) { tool(name: $name) { ...ToolFields } }" + TOOL_FIELDS)

ESTIMATE = gql(
    """
query Estimate($input: EstimateJobCostInput!) {
  estimateJobCost(input: $input) { total breakdown { label quantity unitPrice amount } }
}
"""
)

ESTIMATE_IN_WORKSPACE = gql(
    """
query EstimateInWorkspace($input: EstimateJobCostInput!, $workspaceId: ID!) {
  estimateJobCost(input: $input) { total breakdown { label quantity unitPrice amount } }
  workspace(id: $workspaceId) { creditBalance }
}
"""
)

SUBMIT = gql(
    """
mutation Submit($input: SubmitJobInput!) {
  submitJob(input: $input) { replayed job { ...JobFields } }
}
"""
    + JOB_FIELDS
)

JOB = gql("query Job($id: ID!) { job(id: $id) { ...JobFields } }" + JOB_FIELDS)

CANCEL = gql(
    """
mutation Cancel($id: ID!) { cancelJob(input: {jobId: $id}) { job { ...JobFields } } }
"""
    + JOB_FIELDS
)

HISTORY = gql(
    """
query History($workspaceId: ID!, $filter: JobFilterInput, $first: Int, $after: String) {
  workspace(id: $workspaceId) {
    jobs(filter: $filter, first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { ...JobFields }
    }
  }
}
"""
    + JOB_FIELDS
)

WORKSPACES = gql(
    """
query Workspaces($first: Int, $after: String) {
  viewer {
    workspaces(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { ...WorkspaceFields }
    }
  }
}
"""
    + WORKSPACE_FIELDS
)

WORKSPACE = gql(
    "query Workspace($id: ID!) { workspace(id: $id) { ...WorkspaceFields } }" + WORKSPACE_FIELDS
)

CREATE_WORKSPACE = gql(
    """
mutation CreateWorkspace($name: String!) {
  createWorkspace(input: {name: $name}) { workspace { ...WorkspaceFields } }
}
"""
    + WORKSPACE_FIELDS
)

GRANT_CREDITS = gql(
    """
mutation GrantCredits($workspaceId: ID!, $amount: Int!, $note: String) {
  grantCredits(input: {workspaceId: $workspaceId, amount: $amount, note: $note}) {
    workspace { ...WorkspaceFields }
  }
}
"""
    + WORKSPACE_FIELDS
)

EVENT_CURSOR = gql("query EventCursor($id: ID!) { workspace(id: $id) { eventCursor } }")

JOB_UPDATED = gql(
    "subscription JobUpdated($id: ID!) { jobUpdated(id: $id) { ...JobFields } }" + JOB_FIELDS
)

WORKSPACE_EVENTS = gql(
    """
subscription WorkspaceEvents($workspaceId: ID!, $filter: JobFilterInput, $after: String) {
  workspaceJobEvents(workspaceId: $workspaceId, filter: $filter, after: $after) {
    cursor kind jobId status job { ...JobFields }
  }
}
"""
    + JOB_FIELDS
)

ALL = {
    "Tools": TOOLS,
    "Tool": TOOL,
    "Estimate": ESTIMATE,
    "EstimateInWorkspace": ESTIMATE_IN_WORKSPACE,
    "Submit": SUBMIT,
    "Job": JOB,
    "Cancel": CANCEL,
    "History": HISTORY,
    "Workspaces": WORKSPACES,
    "Workspace": WORKSPACE,
    "CreateWorkspace": CREATE_WORKSPACE,
    "GrantCredits": GRANT_CREDITS,
    "EventCursor": EVENT_CURSOR,
    "JobUpdated": JOB_UPDATED,
    "WorkspaceEvents": WORKSPACE_EVENTS,
}
