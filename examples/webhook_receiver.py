#!/usr/bin/env python3
"""A jobgraph webhook receiver that verifies every request with the `standardwebhooks` package.

    # Receive: print each verified event, refuse the others with 400.
    python webhook_receiver.py serve --port 9000 --secret whsec_...

    # Check a running server end to end: register this receiver for a workspace's job events,
    # submit a job, and wait until its verified events arrive (exit status 0), up to 60 s.
    python webhook_receiver.py check http://127.0.0.1:8000 jg_TOKEN ws_WORKSPACE_ID

The server must be allowed to reach this machine (`--fetch-allow 127.0.0.1`).
"""

import argparse
import json
import queue
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def receiver(port, events):
    """An HTTP server on 127.0.0.1:`port` (0: any free one) that puts each event verified with
    its `secret` attribute on `events`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event = Webhook(self.server.secret).verify(body, headers)
            except WebhookVerificationError as err:
                print(f"refused: {err}", file=sys.stderr)
                self.send_response(400)
                self.end_headers()
                return
            # Deduplicate on `webhook-id`: a retried event carries the same one.
            events.put((headers["webhook-id"], event))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    # Until the endpoint is registered no secret is known: a key that verifies nothing.
    httpd.secret = "whsec_" + "A" * 44
    return httpd


def graphql(server, token, query, variables):
    request = urllib.request.Request(
        f"{server}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise SystemExit(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def check(server, token, workspace):
    events = queue.Queue()
    httpd = receiver(0, events)
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    created = graphql(
        server,
        token,
        """mutation($input: CreateWebhookInput!) {
             createWebhook(input: $input) { secret webhook { id } } }""",
        {"input": {"workspaceId": workspace, "url": f"http://127.0.0.1:{port}/hook",
                   "events": ["job.queued", "job.started", "job.completed", "job.failed"],
                   "description": "CI receiver"}},
    )["createWebhook"]
    # The secret is shown this once: keep it where the receiver reads it.
    httpd.secret = created["secret"]
    job = graphql(
        server,
        token,
        """mutation($ws: ID!) { submitJob(input: {workspaceId: $ws, tool: "sleep",
             settings: {seconds: 0}}) { job { id } } }""",
        {"ws": workspace},
    )["submitJob"]["job"]["id"]
    seen = {}
    while "job.completed" not in [e["type"] for e in seen.values()]:
        try:
            webhook_id, event = events.get(timeout=60)
        except queue.Empty:
            raise SystemExit(f"no job.completed within 60 s; got {sorted(seen)}")
        if event["data"]["id"] == job:
            seen[webhook_id] = event
    # Events may arrive in any order (they are sent side by side); `timestamp` orders them.
    while len(seen) < 3:
        try:
            webhook_id, event = events.get(timeout=10)
        except queue.Empty:
            break
        if event["data"]["id"] == job:
            seen[webhook_id] = event
    ordered = sorted(seen.values(), key=lambda event: event["timestamp"])
    types = [event["type"] for event in ordered]
    print(f"verified {len(seen)} events of {job}: {', '.join(types)}")
    assert sorted(types) == ["job.completed", "job.queued", "job.started"], types
    httpd.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--port", type=int, default=9000)
    serve.add_argument("--secret", required=True)
    run = commands.add_parser("check")
    run.add_argument("server")
    run.add_argument("token")
    run.add_argument("workspace")
    args = parser.parse_args()
    if args.command == "serve":
        events = queue.Queue()
        httpd = receiver(args.port, events)
        httpd.secret = args.secret
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print(f"receiving on http://127.0.0.1:{args.port}/hook", flush=True)
        while True:
            webhook_id, event = events.get()
            print(webhook_id, json.dumps(event), flush=True)
    else:
        check(args.server.rstrip("/"), args.token, args.workspace)


if __name__ == "__main__":
    main()
