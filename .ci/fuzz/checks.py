"""Checks the schema-driven fuzz pass applies to every response of jobgraph.

Loaded by schemathesis through SCHEMATHESIS_HOOKS. It replaces schemathesis's `not_a_server_error`,
which counts every GraphQL error as a server failure: no response may be a 5xx, every GraphQL error a client receives must carry a stable `extensions.code`, and none may
be INTERNAL_SERVER_ERROR: a hostile input is the client's mistake, never the server's.
"""

import json

import schemathesis


@schemathesis.check
def every_error_has_a_code(ctx, response, case):
    if response.status_code >= 500:
        raise AssertionError(f"status {response.status_code}")
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        raise AssertionError(f"the response is not JSON (status {response.status_code})")
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        code = (error.get("extensions") or {}).get("code")
        if not code:
            raise AssertionError(f"an error without extensions.code: {error.get('message')!r}")
        if code == "INTERNAL_SERVER_ERROR":
            raise AssertionError(f"INTERNAL_SERVER_ERROR: {error.get('message')!r}")
