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
from pathlib import Path

import pytest
import requests

from jobgraph import FINAL_STATUSES, Client, Event, Subscription, Workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jobgraph_binary() -> str:
    binary = os.environ.get("JOBGRAPH_BIN")
    if not binary or not Path(binary).is_file():
        raise pytest.UsageError(
            "set JOBGRAPH_BIN to a built jobgraph binary (cargo build: target/debug/jobgraph)"
        )
    return binary


class Server:
    """`jobgraph serve` on a free port over its own data folder; it can be stopped and started
    again on the same port and database. `token` is the administrator's, printed at first start."""

    def __init__(self, binary: str, folder: Path, database_url: str = "") -> None:
        self.binary = binary
        self.folder = folder
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.token = ""
        self.env = dict(os.environ)
        self.env.update(
            JOBGRAPH_DATA_DIR=str(folder / "data"),
            JOBGRAPH_LISTEN=f"127.0.0.1:{port}",
            DATABASE_URL=database_url,
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.folder / "stdout", "a") as out, open(self.folder / "stderr", "a") as err:
            self._process = subprocess.Popen(
                [self.binary, "serve"], env=self.env, stdout=out, stderr=err
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        found = re.search(r"jg_[A-Za-z0-9]+", (self.folder / "stdout").read_text())
        if self._process.poll() is not None or found is None:
            logs = (self.folder / "stdout").read_text() + (self.folder / "stderr").read_text()
            raise RuntimeError(f"the server did not start with a token:\n{logs}")
        self.token = found.group(0)

    def stop(self) -> None:
        """Stops it as an operator does (SIGTERM: running jobs get their grace period)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # SQLite in the data folder, or a fresh PostgreSQL database the caller made.
    database_url = os.environ.get("JOBGRAPH_TEST_DATABASE_URL", "")
    server = Server(jobgraph_binary(), tmp_path_factory.mktemp("server"), database_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def until_final(events: Subscription[Event], job_id: str) -> list[Event]:
    """The events of one job, up to the one with its final status."""
    seen: list[Event] = []
    while not seen or seen[-1].status not in FINAL_STATUSES:
        event = events.get(timeout=60)
        if event.job_id == job_id:
            seen.append(event)
    return seen
