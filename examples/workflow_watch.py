"""Submit a workflow, then watch its steps live over the `workflowUpdated` subscription.

The workflow is a diamond over the built-in tools: DNA translated to proteins, whose
statistics and k-mers are counted side by side, then a last step once both are done. With
Python's `gql` client (websockets transport):

    pip install "gql[websockets]>=4"
    JOBGRAPH_URL=http://127.0.0.1:8000 JOBGRAPH_TOKEN=jg_... python examples/workflow_watch.py ws_01...

`JOBGRAPH_WS_PROTOCOL` picks the websocket protocol: `graphql-transport-ws` (the default) or
the legacy `graphql-ws`. Prints each change of a step's status; exits with status 1 unless
the workflow completes.
"""

import asyncio
import os
import sys

from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport

URL = os.environ.get("JOBGRAPH_URL", "http://127.0.0.1:8000").rstrip("/")
TOKEN = os.environ["JOBGRAPH_TOKEN"]
PROTOCOL = os.environ.get("JOBGRAPH_WS_PROTOCOL", "graphql-transport-ws")
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}

# The steps' inputs name a workflow input (`inputs.dna`) or an upstream step's output
# (`translate.proteins`); `after` orders steps that pass no data.
DEFINITION = {
    "inputs": [{"name": "dna", "kind": "FILE", "format": "FASTA", "required": True}],
    "parameters": [{"name": "k", "default": 3}],
    "steps": [
        {"name": "translate", "tool": "translate-dna",
         "inputs": [{"input": "sequences", "from": "inputs.dna"}]},
        {"name": "stats", "tool": "sequence-stats",
         "inputs": [{"input": "sequences", "from": "translate.proteins"}]},
        {"name": "kmers", "tool": "kmer-count", "settings": {"k": {"$param": "k"}},
         "inputs": [{"input": "sequences", "from": "translate.proteins"}]},
        {"name": "done", "tool": "noop", "after": ["stats", "kmers"]},
    ],
}
DNA = (
    ">gene1\nATGGCCATTGTAATGGGCCGCTGAAAGGGTGCCCGATAG\n"
    ">gene2\nATGAAACGCATTAGCACCACCATTACCACCACCATCACC\n"
)

SUBMIT = gql(
    """
    mutation($input: SubmitWorkflowInput!) {
      submitWorkflow(input: $input) {
        workflow { id name status credits { estimated reserved maxCredits } }
      }
    }
    """
)
WATCH = gql(
    """
    subscription($id: ID!) {
      workflowUpdated(id: $id) {
        id status progress errorMessage credits { charged refunded reserved }
        steps { name status reason waitingFor job { id status progress stage result } }
      }
    }
    """
)


def describe(step: dict) -> str:
    """A step's status, with what it waits for, its job's progress or why it ended."""
    job = step["job"] or {}
    if step["status"] == "WAITING" and step["waitingFor"]:
        detail = "after " + ", ".join(step["waitingFor"])
    elif step["status"] == "RUNNING":
        detail = f"{job.get('status', '')} {job.get('progress', 0):.0%} {job.get('stage') or ''}"
    else:
        detail = step["reason"] or ""
    return f"{step['status']:<9} {detail}".rstrip()


async def submit_and_watch(workspace_id: str) -> dict:
    transport = WebsocketsTransport(
        url=URL.replace("http", "ws", 1) + "/graphql",
        init_payload={"authorization": f"Bearer {TOKEN}"},
        subprotocols=[PROTOCOL],
    )
    async with Client(transport=transport) as session:
        # Two steps are priced by the proteins' size, known only once `translate` ran:
        # maxCredits bounds the whole workflow, and is what submission reserves.
        variables = {
            "input": {
                "workspaceId": workspace_id,
                "name": "Translate, then count",
                "definition": DEFINITION,
                "inputs": [{"name": "dna", "text": DNA}],
                "maxCredits": 40,
            }
        }
        submitted = await session.execute(GraphQLRequest(SUBMIT, variable_values=variables))
        workflow = submitted["submitWorkflow"]["workflow"]
        credits = workflow["credits"]
        print(
            f"submitted {workflow['id']} ({workflow['name']}): {credits['reserved']} credits"
            f" reserved of at most {credits['maxCredits']}"
        )
        last: dict[str, str] = {}
        watch = GraphQLRequest(WATCH, variable_values={"id": workflow["id"]})
        async for update in session.subscribe(watch):
            workflow = update["workflowUpdated"]
            for step in workflow["steps"]:
                line = describe(step)
                # Only the changes: progress within a stage counts as one.
                key = f"{step['status']} {(step['job'] or {}).get('stage')}"
                if last.get(step["name"]) != key:
                    last[step["name"]] = key
                    print(f"  {step['name']:<10} {line}")
            if workflow["status"] in FINAL:
                return workflow
    raise RuntimeError("the subscription ended before the workflow finished")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    workflow = asyncio.run(submit_and_watch(sys.argv[1]))
    credits = workflow["credits"]
    print(
        f"{workflow['id']} ended {workflow['status']}: {credits['charged']} credits charged,"
        f" {credits['refunded']} refunded"
    )
    if workflow["status"] != "COMPLETED":
        print(f"  {workflow['errorMessage'] or ''}")
        return 1
    stats = next(step for step in workflow["steps"] if step["name"] == "stats")
    print(f"  {stats['job']['result']['count']} proteins, as sequence-stats counted them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
