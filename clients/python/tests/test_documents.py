"""Every document the client sends is valid against the server's schema."""

import subprocess

import pytest
from graphql import build_schema, validate

from jobgraph import documents


@pytest.mark.parametrize("name", sorted(documents.ALL))
def test_the_document_is_valid_against_the_served_schema(server, name: str) -> None:
    sdl = subprocess.run(
        [server.binary, "schema"], check=True, capture_output=True, text=True
    ).stdout
    errors = validate(build_schema(sdl), documents.ALL[name].document)
    assert errors == []
