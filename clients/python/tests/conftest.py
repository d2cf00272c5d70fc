"""A real jobgraph server for the tests: the binary named by `JOBGRAPH_BIN`, started once on a
free port over a temporary SQLite database (or the empty PostgreSQL database named by
`JOBGRAPH_TEST_DATABASE_URL`), with the administrator token it prints on its first start.
Each test gets a workspace of its own with credits."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import requests

from jobgraph import Client, Workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    binary: str
    url: str
    token: str


def _first_start_token(
    process: subprocess.Popen[bytes], url: str, stdout: IO[str], stderr: IO[str]
) -> str:
    """The administrator token the server prints on its first start, once it answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        stdout.seek(0)
        found = re.search(r"jg_[A-Za-z0-9]+", stdout.read())
        try:
            healthy = requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            healthy = False
        if found and healthy:
            return found.group(0)
        time.sleep(0.2)
    stdout.seek(0)
    stderr.seek(0)
    raise RuntimeError(f"the server did not start with a token:\n{stdout.read()}\n{stderr.read()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = os.environ.get("JOBGRAPH_BIN")
    if not binary or not Path(binary).is_file():
        raise pytest.UsageError(
            "set JOBGRAPH_BIN to a built jobgraph binary (cargo build: target/debug/jobgraph)"
        )
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        JOBGRAPH_DATA_DIR=str(folder / "data"),
        JOBGRAPH_LISTEN=f"127.0.0.1:{port}",
        # SQLite in the data folder, or a fresh PostgreSQL database the caller made.
        DATABASE_URL=os.environ.get("JOBGRAPH_TEST_DATABASE_URL", ""),
    )
    with open(folder / "stdout", "w+") as stdout, open(folder / "stderr", "w+") as stderr:
        process = subprocess.Popen([binary, "serve"], env=env, stdout=stdout, stderr=stderr)
        try:
            yield Server(binary, url, _first_start_token(process, url, stdout, stderr))
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, token=server.token) as client:
        yield client


@pytest.fixture
def workspace(client: Client) -> Workspace:
    """A fresh workspace with 1,000 credits."""
    created = client.create_workspace(f"pytest {uuid.uuid4().hex[:8]}")
    return client.grant_credits(created.id, 1000, note="tests")


@pytest.fixture
def fasta(tmp_path: Path) -> Path:
    path = tmp_path / "reads.fa"
    path.write_text(">seq1\nACGTACGTTGCA\n>seq2\nGGGCCC\n")
    return path
