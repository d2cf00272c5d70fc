"""The client: typed calls over gql, queries and mutations by HTTP (uploads by the GraphQL
multipart request specification), subscriptions over a `graphql-transport-ws` websocket."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import requests
from gql import Client as GqlClient
from gql import FileVar, GraphQLRequest
from gql.transport.exceptions import (
    TransportConnectionFailed,
    TransportProtocolError,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport

from . import documents
from .errors import JobFailed, JobgraphError, ServerUnreachable
from .history import History, job_filter
from .live import RECONNECT_SECONDS, Subscription
from .models import FAILED_STATUSES, Estimate, Event, File, Job, Tool, Workspace
from .progress import ProgressBar

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"


class Url(str):
    """An input fetched by the server from an http or https URL after submission:
    `inputs={"sequences": Url("https://example.org/reads.fa")}`."""


#: An input's value: a `Path` is uploaded, a `Url` is fetched by the server, `bytes` are
#: uploaded as a file named after the input, and a `str` is the content itself, inline.
InputValue = Path | Url | bytes | str


class Client:
    """A jobgraph server, by its URL (`http://host:8000`, with or without `/graphql`) and an API
    token sent as `Authorization: Bearer ...`.

    Without arguments, the URL is `JOBGRAPH_URL` (default `http://127.0.0.1:8000`) and the
    token `JOBGRAPH_TOKEN` (none: an anonymous client, which sees PUBLIC jobs only).
    `timeout` bounds each HTTP request; a subscription whose connection is lost tries to open
    another for `reconnect_seconds` (see `Subscription`).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        base = (url or os.environ.get("JOBGRAPH_URL") or DEFAULT_URL).rstrip("/")
        if base.endswith("/graphql"):
            base = base[: -len("/graphql")]
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://: {base!r}")
        self.url = base
        self.graphql_url = base + "/graphql"
        self.token = token if token is not None else os.environ.get("JOBGRAPH_TOKEN") or None
        self._headers: dict[str, str] = {"Accept": "application/graphql-response+json"}
        if self.token:
            self._headers["Authorization"] = f"Bearer {self.token}"
        else:
            # A multipart POST must carry a header no HTML form can set.
            self._headers["Apollo-Require-Preflight"] = "true"
        self._timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        # Downloads send the token alone.
        self._http = requests.Session()
        if self.token:
            self._http.headers["Authorization"] = f"Bearer {self.token}"
        transport = RequestsHTTPTransport(
            url=self.graphql_url, headers=self._headers, timeout=int(timeout), retries=0
        )
        self._gql = GqlClient(transport=transport)
        self._session = self._gql.connect_sync()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"Client({self.url!r}, token={'...' if self.token else None})"

    def close(self) -> None:
        """Closes the HTTP connections."""
        self._gql.close_sync()  # type: ignore[no-untyped-call]
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def execute(
        self,
        request: GraphQLRequest,
        variables: Mapping[str, Any] | None = None,
        *,
        upload_files: bool = False,
    ) -> dict[str, Any]:
        """Runs a GraphQL document and returns its `data`; raises `JobgraphError` with the
        server's `extensions.code` when it refuses."""
        request = GraphQLRequest(request, variable_values=dict(variables or {}))
        try:
            data: dict[str, Any] = self._session.execute(request, upload_files=upload_files)
            return data
        except TransportQueryError as err:
            raise JobgraphError.from_graphql_errors(err.errors or []) from None
        except TransportServerError as err:
            raise ServerUnreachable(f"{self.graphql_url} answered HTTP {err.code}: {err}") from None
        except (TransportConnectionFailed, TransportProtocolError) as err:
            raise ServerUnreachable(f"{self.graphql_url}: {err}") from None

    def _get(self, url: str, *, stream: bool = False) -> requests.Response:
        """A GET of one of the server's download URLs, with the token. A refusal carries a
        GraphQL-shaped body, whose code the error takes."""
        try:
            response = self._http.get(url, stream=stream, timeout=self._timeout)
        except requests.RequestException as err:
            raise ServerUnreachable(f"{url}: {err}") from None
        if response.status_code < 400:
            return response
        try:
            errors = response.json()["errors"]
        except (ValueError, KeyError, TypeError):
            raise ServerUnreachable(f"GET {url} answered HTTP {response.status_code}") from None
        raise JobgraphError.from_graphql_errors(errors)

    def _websocket(self) -> WebsocketsTransport:
        ws_url = "ws" + self.graphql_url[len("http") :]
        return WebsocketsTransport(
            url=ws_url,
            init_payload={"authorization": f"Bearer {self.token}"} if self.token else {},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            ssl=ws_url.startswith("wss://"),
        )

    def subscribe(
        self, request: GraphQLRequest, variables: Mapping[str, Any] | None = None
    ) -> Subscription[dict[str, Any]]:
        """Runs a GraphQL subscription and iterates over its `data`."""
        request = GraphQLRequest(request, variable_values=dict(variables or {}))
        return Subscription(self._websocket, lambda _last: request, lambda data: data)

    # -- tools and prices ------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        """The tools on offer, with their inputs, settings schemas and prices."""
        return [Tool.from_graphql(t) for t in self.execute(documents.TOOLS)["tools"]]

    def tool(self, name: str) -> Tool:
        """One tool by name; `NOT_FOUND` if there is none."""
        data = self.execute(documents.TOOL, {"name": name})["tool"]
        if data is None:
            raise JobgraphError(f"there is no tool {name!r}", "NOT_FOUND")
        return Tool.from_graphql(data)

    def estimate(
        self,
        tool: str,
        inputs: Mapping[str, InputValue] | None = None,
        settings: Mapping[str, Any] | None = None,
        workspace: str | None = None,
    ) -> Estimate:
        """The price `submit` would charge for the same tool, inputs and settings.

        The API prices content, and takes uploads in mutations only, so a `Path` or `bytes`
        input is sent inline as text here (it must be UTF-8, and within the server's body
        limit: `PAYLOAD_TOO_LARGE` otherwise). With `workspace`, the estimate also carries
        the workspace's balance and whether it covers the price.
        """
        values = [_estimate_input(name, value) for name, value in (inputs or {}).items()]
        job_input: dict[str, Any] = {"tool": tool, "inputs": values}
        if settings is not None:
            job_input["settings"] = dict(settings)
        if workspace is None:
            data = self.execute(documents.ESTIMATE, {"input": job_input})
            return Estimate.from_graphql(data["estimateJobCost"])
        data = self.execute(
            documents.ESTIMATE_IN_WORKSPACE, {"input": job_input, "workspaceId": workspace}
        )
        return Estimate.from_graphql(
            data["estimateJobCost"], balance=data["workspace"]["creditBalance"]
        )

    # -- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        tool: str,
        *,
        workspace: str,
        inputs: Mapping[str, InputValue] | None = None,
        settings: Mapping[str, Any] | None = None,
        name: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_credits: int | None = None,
    ) -> Job:
        """Submits a job: the server checks it, charges its price and queues it, all or nothing.

        `inputs` maps the tool's input names to values: a `Path` is uploaded (the GraphQL
        multipart request), a `Url` is fetched by the server, `bytes` are uploaded as a file
        named after the input, a `str` is the content inline. `max_credits` refuses a price
        above it; the same `idempotency_key` again returns the first job, uncharged.
        """
        values = [_submit_input(name, value) for name, value in (inputs or {}).items()]
        job_input: dict[str, Any] = {
            "workspaceId": workspace,
            "tool": tool,
            "inputs": values,
            "priority": priority,
        }
        for key, value in (
            ("settings", dict(settings) if settings is not None else None),
            ("name", name),
            ("idempotencyKey", idempotency_key),
            ("maxCredits", max_credits),
        ):
            if value is not None:
                job_input[key] = value
        uploads = any(isinstance(v.get("file"), FileVar) for v in values)
        data = self.execute(documents.SUBMIT, {"input": job_input}, upload_files=uploads)
        return Job.from_graphql(data["submitJob"]["job"], self)

    def job(self, id: str) -> Job:
        """A job by id; `NOT_FOUND` when it does not exist or the viewer may not see it."""
        return Job.from_graphql(self.execute(documents.JOB, {"id": id})["job"], self)

    def cancel(self, id: str) -> Job:
        """Cancels a job; it is refunded if it had not started running."""
        data = self.execute(documents.CANCEL, {"id": id})
        return Job.from_graphql(data["cancelJob"]["job"], self)

    def updates(self, id: str) -> Subscription[Job]:
        """The job now, then after each change of status, stage, progress or outputs (the
        `jobUpdated` subscription); ends when the job is deleted."""
        request = GraphQLRequest(documents.JOB_UPDATED, variable_values={"id": id})
        return Subscription(
            self._websocket,
            lambda _last: request,
            lambda data: Job.from_graphql(data["jobUpdated"], self),
            self.reconnect_seconds,
        )

    def wait(
        self,
        id: str,
        *,
        progress: bool = True,
        timeout: float | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Follows a job until it ends and returns it: see `Job.wait`."""
        bar = ProgressBar(id) if progress else None
        try:
            with self.updates(id) as updates:
                for job in _within(updates, timeout):
                    if bar is not None:
                        bar.show(job)
                    if job.is_final:
                        break
                else:
                    raise JobgraphError(f"job {id} was deleted while it was waited for")
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and job.status in FAILED_STATUSES:
            raise JobFailed(job)
        return job

    def events(
        self,
        workspace: str,
        *,
        after: str | None = None,
        **filters: Any,
    ) -> Subscription[Event]:
        """The live events of a workspace's jobs (created, updated, deleted) that pass the
        history filters (`statuses`, `tool`, `search`, `mine`, ...), as a blocking iterator.

        With `after`, the `cursor` of an earlier event, first the events since then, from the
        server's log (7 days), then live: none missed, none repeated. Without it, the events
        start from the moment of the call (its `event_cursor`): a change made once it returns
        comes through, however long the subscription takes to start.
        """
        chosen = job_filter(**filters)
        if after is None:
            after = self.event_cursor(workspace)

        def request(last: dict[str, Any] | None) -> GraphQLRequest:
            # After a lost connection, resume right after the last event received.
            cursor = last["workspaceJobEvents"]["cursor"] if last else after
            variables = {"workspaceId": workspace, "filter": chosen, "after": cursor}
            return GraphQLRequest(documents.WORKSPACE_EVENTS, variable_values=variables)

        return Subscription(
            self._websocket,
            request,
            lambda data: Event.from_graphql(data["workspaceJobEvents"], self),
            self.reconnect_seconds,
        )

    def event_cursor(self, workspace: str) -> str:
        """Where a workspace's live events stand now: `events(workspace, after=cursor)` yields
        every event from this moment on. Read it with the jobs it goes with (a history page,
        say) and nothing changed in between is missed."""
        data = self.execute(documents.EVENT_CURSOR, {"id": workspace})
        if data["workspace"] is None:
            raise JobgraphError("workspace not found", code="NOT_FOUND")
        cursor: str = data["workspace"]["eventCursor"]
        return cursor

    def history(self, workspace: str, *, page_size: int = 50, **filters: Any) -> History:
        """A workspace's jobs, newest first, filtered: `statuses`, `tool`, `search` (part of
        the name), `mine`, `submitter`, `batch`, `created_after`, `created_before`.

        Iterating fetches page after page (keyset pagination); `.pages()` yields the pages,
        `.to_dataframe()` gives a pandas DataFrame.
        """
        return History(self, workspace, job_filter(**filters), page_size)

    def history_dataframe(
        self, workspace: str, *, limit: int | None = None, **filters: Any
    ) -> pd.DataFrame:
        """`history(workspace, **filters).to_dataframe(limit)`: needs pandas
        (`pip install jobgraph[pandas]`)."""
        return self.history(workspace, **filters).to_dataframe(limit=limit)

    # -- files -----------------------------------------------------------------------------

    def download_file(self, file: File, directory: str | Path = ".") -> Path:
        """Downloads a stored file into `directory` under its name, checking its SHA-256."""
        name = PurePath(file.name).name
        if name in ("", ".", ".."):
            raise JobgraphError(f"the file name {file.name!r} cannot be written")
        target = Path(directory) / name
        digest = hashlib.sha256()
        partial = target.with_name(target.name + ".part")
        with self._get(file.download_url, stream=True) as response, open(partial, "wb") as out:
            for chunk in response.iter_content(chunk_size=1 << 16):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != file.sha256:
            partial.unlink()
            raise JobgraphError(f"the download of {file.name} does not match its SHA-256")
        partial.replace(target)
        return target

    def read_file(self, file: File) -> bytes:
        """A stored file's content, checked against its SHA-256."""
        content = self._get(file.download_url).content
        if hashlib.sha256(content).hexdigest() != file.sha256:
            raise JobgraphError(f"the content of {file.name} does not match its SHA-256")
        return content

    # -- workspaces ------------------------------------------------------------------------

    def workspaces(self) -> list[Workspace]:
        """The workspaces the viewer is a member of, newest first."""
        found: list[Workspace] = []
        after: str | None = None
        while True:
            data = self.execute(documents.WORKSPACES, {"first": 100, "after": after})
            page = data["viewer"]["workspaces"]
            found.extend(Workspace.from_graphql(w) for w in page["nodes"])
            if not page["pageInfo"]["hasNextPage"]:
                return found
            after = page["pageInfo"]["endCursor"]

    def workspace(self, id: str) -> Workspace:
        """A workspace by id, with its balance."""
        return Workspace.from_graphql(self.execute(documents.WORKSPACE, {"id": id})["workspace"])

    def create_workspace(self, name: str) -> Workspace:
        """Creates a workspace; the viewer becomes its owner."""
        data = self.execute(documents.CREATE_WORKSPACE, {"name": name})
        return Workspace.from_graphql(data["createWorkspace"]["workspace"])

    def grant_credits(self, workspace: str, amount: int, note: str | None = None) -> Workspace:
        """Gives credits to a workspace (platform administrators)."""
        variables = {"workspaceId": workspace, "amount": amount, "note": note}
        data = self.execute(documents.GRANT_CREDITS, variables)
        return Workspace.from_graphql(data["grantCredits"]["workspace"])


def _within(updates: Subscription[Job], timeout: float | None) -> Iterable[Job]:
    """The subscription's items until it ends; `TimeoutError` past `timeout` seconds overall."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            yield updates.get(timeout=left)
        except StopIteration:
            return


def _submit_input(name: str, value: InputValue) -> dict[str, Any]:
    if isinstance(value, Url):
        return {"name": name, "url": str(value)}
    if isinstance(value, PurePath):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"the input {name!r}: no file at {path}")
        return {"name": name, "file": FileVar(str(path), filename=path.name)}
    if isinstance(value, (bytes, bytearray)):
        return {"name": name, "file": FileVar(io.BytesIO(bytes(value)), filename=name)}
    if isinstance(value, str):
        return {"name": name, "text": value}
    raise TypeError(f"the input {name!r}: expected a Path, Url, bytes or str, not {type(value)}")


def _estimate_input(name: str, value: InputValue) -> dict[str, Any]:
    if isinstance(value, Url):
        return {"name": name, "url": str(value)}
    if isinstance(value, PurePath):
        return {"name": name, "text": Path(value).read_text(encoding="utf-8")}
    if isinstance(value, (bytes, bytearray)):
        return {"name": name, "text": bytes(value).decode("utf-8")}
    if isinstance(value, str):
        return {"name": name, "text": value}
    raise TypeError(f"the input {name!r}: expected a Path, Url, bytes or str, not {type(value)}")
