"""What the API returns, as dataclasses: tools and prices, estimates, jobs and their files,
workspaces and live events. Each is read from the GraphQL answer by its `from_graphql`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import JobgraphError

if TYPE_CHECKING:
    from .client import Client

#: The statuses a job ends in.
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"})
#: The final statuses `Job.wait` raises `JobFailed` for.
FAILED_STATUSES = frozenset({"FAILED", "TIMEOUT", "CANCELLED"})


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time of the API as an aware datetime (UTC)."""
    if value is None:
        return None
    text = value.replace("Z", "+00:00")
    # The server writes nanoseconds; Python's datetime keeps microseconds.
    if "." in text:
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class ToolInput:
    """An input a tool takes: `kind` is TEXT or FILE."""

    name: str
    kind: str
    required: bool
    max_bytes: int
    format: str | None
    description: str

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> ToolInput:
        return cls(
            name=data["name"],
            kind=data["kind"],
            required=data["required"],
            max_bytes=data["maxBytes"],
            format=data.get("format"),
            description=data["description"],
        )


@dataclass(frozen=True)
class Price:
    """How a tool is priced, in credits: a base, per started kilobyte of input, per started
    thousand FASTA residues, and per unit of the named numeric settings."""

    base: int
    per_kilobyte: int
    per_1k_residues: int
    per_setting_unit: dict[str, int]

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> Price:
        return cls(
            base=data["base"],
            per_kilobyte=data["perKilobyte"],
            per_1k_residues=data["per1kResidues"],
            per_setting_unit={s["name"]: s["perUnit"] for s in data["settings"]},
        )


@dataclass(frozen=True)
class Tool:
    """A tool on offer, with its inputs, settings schema and price."""

    name: str
    title: str
    description: str
    version: str
    inputs: list[ToolInput]
    settings_schema: dict[str, Any]
    price: Price
    timeout_seconds: int
    max_attempts: int

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> Tool:
        return cls(
            name=data["name"],
            title=data["title"],
            description=data["description"],
            version=data["version"],
            inputs=[ToolInput.from_graphql(i) for i in data["inputs"]],
            settings_schema=data["settingsSchema"],
            price=Price.from_graphql(data["price"]),
            timeout_seconds=data["timeoutSeconds"],
            max_attempts=data["maxAttempts"],
        )


@dataclass(frozen=True)
class CostLine:
    """One line of an estimate: `quantity` times `unit_price` is `amount`."""

    label: str
    quantity: int
    unit_price: int
    amount: int


@dataclass(frozen=True)
class Estimate:
    """The price a submission would be charged, with its breakdown.

    With a workspace, `balance` is its credit balance and `affordable` says whether it covers
    the price; both are None otherwise.
    """

    total: int
    breakdown: list[CostLine]
    balance: int | None = None

    @property
    def affordable(self) -> bool | None:
        return None if self.balance is None else self.balance >= self.total

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any], balance: int | None = None) -> Estimate:
        return cls(
            total=data["total"],
            breakdown=[
                CostLine(
                    label=line["label"],
                    quantity=line["quantity"],
                    unit_price=line["unitPrice"],
                    amount=line["amount"],
                )
                for line in data["breakdown"]
            ],
            balance=balance,
        )


@dataclass(frozen=True)
class Workspace:
    """A workspace the viewer can see, with its credit balance and the viewer's role."""

    id: str
    name: str
    credit_balance: int
    viewer_role: str | None

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any]) -> Workspace:
        return cls(
            id=data["id"],
            name=data["name"],
            credit_balance=data["creditBalance"],
            viewer_role=data.get("viewerRole"),
        )


@dataclass(frozen=True)
class File:
    """A stored file of a job: an uploaded or fetched input, or an output of its run."""

    id: str
    name: str
    size: int
    content_type: str
    sha256: str
    role: str
    download_url: str
    created_at: datetime | None
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any], client: Client | None) -> File:
        return cls(
            id=data["id"],
            name=data["name"],
            size=data["size"],
            content_type=data["contentType"],
            sha256=data["sha256"],
            role=data["role"],
            download_url=data["downloadUrl"],
            created_at=parse_time(data.get("createdAt")),
            _client=client,
        )

    def download(self, directory: str | Path = ".") -> Path:
        """Downloads the file into `directory` under its own name; checks its SHA-256."""
        if self._client is None:
            raise JobgraphError("this file is not attached to a client")
        return self._client.download_file(self, directory)

    def read_bytes(self) -> bytes:
        """The file's content, checked against its SHA-256."""
        if self._client is None:
            raise JobgraphError("this file is not attached to a client")
        return self._client.read_file(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        """The file's content as text."""
        return self.read_bytes().decode(encoding)


@dataclass(frozen=True)
class Job:
    """A job as the server last described it. `refresh()` reads it again; `wait()` follows
    it live until it ends; `download()` fetches its output files."""

    id: str
    name: str
    tool: str
    tool_version: str
    status: str
    stage: str | None
    progress: float
    settings: dict[str, Any]
    result: Any
    error_code: str | None
    error_message: str | None
    attempt: int
    max_attempts: int
    credit_cost: int
    refunded: bool
    priority: int
    workspace_id: str | None
    created_at: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    url: str
    files: list[File]
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any], client: Client | None) -> Job:
        workspace = data.get("workspace")
        return cls(
            id=data["id"],
            name=data["name"],
            tool=data["toolName"],
            tool_version=data["toolVersion"],
            status=data["status"],
            stage=data.get("stage"),
            progress=data["progress"],
            settings=data["settings"],
            result=data.get("result"),
            error_code=data.get("errorCode"),
            error_message=data.get("errorMessage"),
            attempt=data["attempt"],
            max_attempts=data["maxAttempts"],
            credit_cost=data["creditCost"],
            refunded=data["refunded"],
            priority=data["priority"],
            workspace_id=workspace["id"] if workspace else None,
            created_at=parse_time(data.get("createdAt")),
            queued_at=parse_time(data.get("queuedAt")),
            started_at=parse_time(data.get("startedAt")),
            finished_at=parse_time(data.get("finishedAt")),
            duration_seconds=data.get("durationSeconds"),
            url=data["url"],
            files=[File.from_graphql(f, client) for f in data["files"]],
            _client=client,
        )

    @property
    def is_final(self) -> bool:
        """Whether the job has ended: COMPLETED, FAILED, TIMEOUT or CANCELLED."""
        return self.status in FINAL_STATUSES

    @property
    def inputs(self) -> list[File]:
        """The stored input files (uploaded or fetched)."""
        return [f for f in self.files if f.role == "INPUT"]

    @property
    def outputs(self) -> list[File]:
        """The output files of a completed run."""
        return [f for f in self.files if f.role == "OUTPUT"]

    def _attached(self) -> Client:
        if self._client is None:
            raise JobgraphError("this job is not attached to a client")
        return self._client

    def refresh(self) -> Job:
        """The job as the server describes it now."""
        return self._attached().job(self.id)

    def wait(
        self,
        progress: bool = True,
        timeout: float | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Follows the job live (the `jobUpdated` subscription) until it ends, and returns it.

        With `progress`, a tqdm bar (`tqdm.auto`: a widget in Jupyter, text in a terminal)
        shows its status, stage and progress. A job that ends FAILED, TIMEOUT or CANCELLED
        raises `JobFailed` (carrying the job), unless `raise_on_failure` is False. Past
        `timeout` seconds, raises `TimeoutError`.
        """
        return self._attached().wait(
            self.id, progress=progress, timeout=timeout, raise_on_failure=raise_on_failure
        )

    def cancel(self) -> Job:
        """Cancels the job; it is refunded if it had not started running."""
        return self._attached().cancel(self.id)

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Downloads the output files into `directory` (created if missing) and returns their
        paths. Reads the job again first, for the outputs of its last run."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        return [f.download(target) for f in self.refresh().outputs]


@dataclass(frozen=True)
class Event:
    """A change among a workspace's jobs: `kind` is CREATED, UPDATED or DELETED; `job` is the
    job as of the event (None once deleted). Pass `cursor` as `after` to resume after it."""

    cursor: str
    kind: str
    job_id: str
    status: str | None
    job: Job | None

    @classmethod
    def from_graphql(cls, data: Mapping[str, Any], client: Client | None) -> Event:
        job = data.get("job")
        return cls(
            cursor=data["cursor"],
            kind=data["kind"],
            job_id=data["jobId"],
            status=data.get("status"),
            job=Job.from_graphql(job, client) if job else None,
        )
