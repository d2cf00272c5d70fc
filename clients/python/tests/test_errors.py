"""Refusals surface the server's `extensions.code`; the client reads its settings from the
environment."""

import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Server

from jobgraph import Client, JobgraphError, ServerUnreachable, Workspace


def test_a_malformed_id_is_bad_user_input_naming_the_field(client: Client) -> None:
    with pytest.raises(JobgraphError) as refused:
        client.job("job_nope")
    assert refused.value.code == "BAD_USER_INPUT"
    assert refused.value.field == "id"
    assert refused.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_an_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(JobgraphError) as refused:
        client.job("job_" + "0" * 32)
    assert refused.value.code == "NOT_FOUND"


def test_a_wrong_token_is_unauthenticated(server) -> None:
    with pytest.raises(JobgraphError) as refused:
        Client(server.url, token="jg_not_a_token").tools()
    assert refused.value.code == "UNAUTHENTICATED"


def test_a_price_above_the_balance_is_insufficient_credits(
    client: Client, workspace: Workspace
) -> None:
    with pytest.raises(JobgraphError) as refused:
        client.submit("sleep", workspace=workspace.id, settings={"seconds": 3600})
    assert refused.value.code == "INSUFFICIENT_CREDITS"
    assert client.workspace(workspace.id).credit_balance == 1000


def test_a_refused_upload_carries_the_code(
    client: Client, workspace: Workspace, tmp_path: Path
) -> None:
    not_fasta = tmp_path / "notes.txt"
    not_fasta.write_text("these are not sequences\n")
    with pytest.raises(JobgraphError) as refused:
        client.submit("sequence-stats", workspace=workspace.id, inputs={"sequences": not_fasta})
    assert refused.value.code == "BAD_USER_INPUT"


def test_a_missing_input_file_is_refused_before_any_request(
    client: Client, workspace: Workspace, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        client.submit(
            "sequence-stats", workspace=workspace.id, inputs={"sequences": tmp_path / "no.fa"}
        )


def test_the_url_and_token_come_from_the_environment(
    server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBGRAPH_URL", server.url + "/graphql")
    monkeypatch.setenv("JOBGRAPH_TOKEN", server.token)
    with Client() as client:
        assert client.url == server.url
        assert client.workspaces() is not None
    monkeypatch.delenv("JOBGRAPH_TOKEN")
    with Client() as anonymous:
        with pytest.raises(JobgraphError) as refused:
            anonymous.create_workspace("nobody's")
        assert refused.value.code == "UNAUTHENTICATED"


def test_a_server_that_is_not_there_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable):
        Client(f"http://127.0.0.1:{port}", token="jg_x").tools()


def test_a_subscription_to_a_server_that_is_not_there_is_unreachable_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", token="jg_x")
    started = time.monotonic()
    with pytest.raises(ServerUnreachable), client.events("ws_01") as events:
        events.get(timeout=30)
    # A subscription that never connected is not retried.
    assert time.monotonic() - started < 10


def test_a_refused_download_carries_the_code(
    server: Server, client: Client, workspace: Workspace, fasta: Path, tmp_path: Path
) -> None:
    job = client.submit("sequence-stats", workspace=workspace.id, inputs={"sequences": fasta})
    [uploaded] = job.inputs
    # Outside the workspace, a private job's file is not found.
    with Client(server.url, token="") as anonymous:
        stranger = replace(uploaded, _client=anonymous)
        with pytest.raises(JobgraphError) as refused:
            stranger.read_bytes()
        assert refused.value.code == "NOT_FOUND"
    malformed = replace(uploaded, download_url=f"{server.url}/files/file_nope")
    with pytest.raises(JobgraphError) as refused:
        malformed.download(tmp_path)
    assert refused.value.code == "BAD_USER_INPUT"
    job.wait(progress=False)
