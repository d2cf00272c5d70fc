#!/usr/bin/env python3
"""The client of benches/peers/queue.sh: GraphQL over HTTP with a bearer token (standard library only).

  client.py submit    creates a workspace, grants it N + WARMUP + LATENCY credits (with the jobgraph CLI
                      at BIN), submits N jobs of the tool `noop` through submitBatch, 1,000 per
                      request, one request at a time; prints the jobs submitted per second
  client.py latency   submits WARMUP jobs named "warm-up <i>", then LATENCY jobs named
                      "latency <i>", one at a time through submitJob, 5 ms apart, to the
                      viewer's first workspace

Environment: URL (the server's /graphql), TOKEN, N, WARMUP, LATENCY, BIN.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

URL, TOKEN = os.environ["URL"], os.environ["TOKEN"]


def post(body):
    request = urllib.request.Request(
        URL, body, {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    )
    answer = json.load(urllib.request.urlopen(request, timeout=120))
    if answer.get("errors"):
        raise SystemExit(f"errors: {answer['errors']}")
    return answer["data"]


def call(query, variables=None):
    return post(json.dumps({"query": query, "variables": variables or {}}).encode())


def submit():
    n, latency = int(os.environ["N"]), int(os.environ["WARMUP"]) + int(os.environ["LATENCY"])
    data = call('mutation { createWorkspace(input: {name: "queue bench"}) { workspace { id } } }')
    ws = data["createWorkspace"]["workspace"]["id"]
    grant = [os.environ["BIN"], "credits", "grant", "--workspace", ws, "--amount", str(n + latency)]
    subprocess.run(grant, check=True, stdout=subprocess.DEVNULL)
    query = "mutation($input: SubmitBatchInput!) { submitBatch(input: $input) { jobs { id } } }"
    bodies = []
    for start in range(0, n, 1000):
        jobs = [{"tool": "noop", "name": f"job {start + i}"} for i in range(min(1000, n - start))]
        variables = {"input": {"workspaceId": ws, "jobs": jobs}}
        bodies.append((len(jobs), json.dumps({"query": query, "variables": variables}).encode()))
    started = time.perf_counter()
    for count, body in bodies:
        if len(post(body)["submitBatch"]["jobs"]) != count:
            raise SystemExit("a batch came back with fewer jobs than it was sent")
    print(round(n / (time.perf_counter() - started)))


def latency():
    data = call("{ viewer { workspaces(first: 1) { edges { node { id } } } } }")
    ws = data["viewer"]["workspaces"]["edges"][0]["node"]["id"]
    query = (
        "mutation($ws: ID!, $name: String!) "
        '{ submitJob(input: {workspaceId: $ws, tool: "noop", name: $name}) { job { id } } }'
    )
    names = [f"warm-up {i}" for i in range(int(os.environ["WARMUP"]))]
    names += [f"latency {i}" for i in range(int(os.environ["LATENCY"]))]
    for name in names:
        call(query, {"ws": ws, "name": name})
        time.sleep(0.005)


{"submit": submit, "latency": latency}[sys.argv[1]]()
