"""Seeds a started jobgraph with real records and writes the schemathesis configuration that
feeds their ids to the fuzzer, so that generated mutations reach the domain code (a random id
only ever meets NOT_FOUND).

Usage: seed.py URL TOKEN CONFIG_PATH
"""

import json
import sys
import urllib.request

url, token, config_path = sys.argv[1], sys.argv[2], sys.argv[3]


def gql(query, variables=None):
    request = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        body = json.load(response)
    if body.get("errors"):
        raise SystemExit(f"seeding failed: {body['errors']}")
    return body["data"]


workspaces, jobs, users = [], [], []
for name in ("Fuzz lab", "Fuzz lab 2"):
    ws = gql("mutation($n: String!) { createWorkspace(input: {name: $n}) { workspace { id } } }", {"n": name})
    workspaces.append(ws["createWorkspace"]["workspace"]["id"])
for ws in workspaces:
    gql("mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 1000000}) { workspace { id } } }", {"ws": ws})
user = gql('mutation { createUser(input: {email: "fuzz@example.org", displayName: "Fuzz"}) { user { id email } } }')
users.append(user["createUser"]["user"]["id"])
gql(
    'mutation($ws: ID!) { addMember(input: {workspaceId: $ws, email: "fuzz@example.org", role: MEMBER}) { membership { role } } }',
    {"ws": workspaces[0]},
)
for tool, settings, inputs in (
    ("noop", {}, []),
    ("sleep", {"seconds": 1}, []),
    ("sequence-stats", {}, [{"name": "sequences", "text": ">a\nACGT\n"}]),
):
    job = gql(
        "mutation($ws: ID!, $t: String!, $s: JSON, $i: [JobInputValue!]) {"
        " submitJob(input: {workspaceId: $ws, tool: $t, settings: $s, inputs: $i}) { job { id } } }",
        {"ws": workspaces[0], "t": tool, "s": settings, "i": inputs},
    )
    jobs.append(job["submitJob"]["job"]["id"])
tools = [t["name"] for t in gql("{ tools { name } }")["tools"]]


def values(items):
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


bindings = {
    "workspaces": ["*.*.input.workspaceId", "Query.workspace.id"],
    "jobs": ["*.*.input.jobId", "Query.job.id", "Query.node.id"],
    "tools": ["*.*.input.tool", "Query.tool.name", "*.*.input.jobs[*].tool"],
    "users": ["*.*.input.userId"],
}
with open(config_path, "w") as config:
    config.write(f"[dictionaries.workspaces]\nvalues = {values(workspaces)}\n\n")
    config.write(f"[dictionaries.jobs]\nvalues = {values(jobs)}\n\n")
    config.write(f"[dictionaries.tools]\nvalues = {values(tools)}\n\n")
    config.write(f"[dictionaries.users]\nvalues = {values(users)}\n\n")
    config.write("[parameters]\n")
    for dictionary, keys in bindings.items():
        for key in keys:
            config.write(f'"{key}" = {{ dictionary = "{dictionary}", probability = 0.7 }}\n')
print(f"seeded {len(workspaces)} workspaces, {len(jobs)} jobs, {len(users)} users")
