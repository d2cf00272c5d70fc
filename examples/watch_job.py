"""Submit a job, watch it live over a GraphQL subscription, then download its result.

A notebook-style script with Python's `gql` client (websockets transport):

    pip install "gql[websockets]>=4"
    JOBGRAPH_URL=http://127.0.0.1:8000 JOBGRAPH_TOKEN=jg_... python examples/watch_job.py ws_01...

`JOBGRAPH_WS_PROTOCOL` picks the websocket protocol: `graphql-transport-ws` (the default) or
the legacy `graphql-ws`. Exits with status 1 unless the job completes.
"""

import asyncio
import json
import os
import sys
import urllib.request

from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport

URL = os.environ.get("JOBGRAPH_URL", "http://127.0.0.1:8000").rstrip("/")
TOKEN = os.environ["JOBGRAPH_TOKEN"]
PROTOCOL = os.environ.get("JOBGRAPH_WS_PROTOCOL", "graphql-transport-ws")
FINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"}

SUBMIT = gql(
    """
    mutation($ws: ID!, $fasta: String!) {
      submitJob(input: {workspaceId: $ws, tool: "kmer-count",
                        inputs: [{name: "sequences", text: $fasta}], settings: {k: 3}}) {
        job { id status creditCost }
      }
    }
    """
)
WATCH = gql(
    """
    subscription($id: ID!) { jobUpdated(id: $id) { id status stage progress } }
    """
)


async def submit_and_watch(workspace_id: str) -> dict:
    transport = WebsocketsTransport(
        url=URL.replace("http", "ws", 1) + "/graphql",
        init_payload={"authorization": f"Bearer {TOKEN}"},
        subprotocols=[PROTOCOL],
    )
    async with Client(transport=transport) as session:
        # Mutations run over the same websocket as the subscription.
        variables = {"ws": workspace_id, "fasta": ">demo\nACGTACGTTGCAACGT\n"}
        submitted = await session.execute(GraphQLRequest(SUBMIT, variable_values=variables))
        job = submitted["submitJob"]["job"]
        print(f"submitted {job['id']}: {job['status']}, {job['creditCost']} credits")
        watch = GraphQLRequest(WATCH, variable_values={"id": job["id"]})
        async for update in session.subscribe(watch):
            job = update["jobUpdated"]
            print(f"  {job['status']:<10} {job['progress']:4.0%} {job['stage'] or ''}")
            if job["status"] in FINAL:
                return job
    raise RuntimeError("the subscription ended before the job finished")


def download(job_id: str) -> dict:
    request = urllib.request.Request(
        f"{URL}/jobs/{job_id}/export.json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    job = asyncio.run(submit_and_watch(sys.argv[1]))
    if job["status"] != "COMPLETED":
        print(f"the job ended {job['status']}")
        return 1
    record = download(job["id"])
    print("result:", json.dumps(record.get("result"), sort_keys=True))
    return 0 if record.get("result") is not None else 1


if __name__ == "__main__":
    sys.exit(main())
