"""Checks the schema-driven fuzz pass applies to every response of jobgraph.

Loaded by schemathesis through SCHEMATHESIS_HOOKS. It replaces schemathesis's `not_a_server_error`,
which counts every GraphQL error as a server failure: no response may be a 5xx, every GraphQL error a client receives must carry a stable `extensions.code`, and none may
be INTERNAL_SERVER_ERROR: a hostile input is the client's mistake, never the server's.
"""

import json

import graphql
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes


def _json_values(depth=2):
    """Any JSON value as a GraphQL literal: what a `JSON` argument takes (settings, parameters)."""
    scalars = st.one_of(
        st.just(nodes.Null),
        st.booleans().map(nodes.Boolean),
        st.integers(min_value=-(2**53), max_value=2**53).map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.text(max_size=50).map(nodes.String),
    )
    if depth == 0:
        return scalars
    inner = _json_values(depth - 1)
    fields = st.lists(
        st.tuples(st.from_regex(r"\A[a-z_][a-z0-9_]{0,10}\Z"), inner),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ).map(
        lambda pairs: nodes.Object(
            [graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v) for k, v in pairs]
        )
    )
    return st.one_of(scalars, st.lists(inner, max_size=4).map(nodes.List), fields)


# The `JSON` scalar (tool settings, workflow parameters and settings overrides), which
# schemathesis cannot generate by itself.
schemathesis.graphql.scalar("JSON", _json_values())


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
