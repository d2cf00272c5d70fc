"""A workspace's job history: filters, keyset pages, and a pandas DataFrame."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import documents
from .models import Job

if TYPE_CHECKING:
    import pandas as pd

    from .client import Client

#: The columns of `History.to_dataframe()`, in order.
COLUMNS = [
    "id",
    "name",
    "tool",
    "status",
    "stage",
    "progress",
    "credit_cost",
    "refunded",
    "error_code",
    "created_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "workspace_id",
]


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: give an aware datetime")
    return value.astimezone(timezone.utc).isoformat()


def job_filter(
    *,
    statuses: Iterable[str] | None = None,
    status: str | None = None,
    tool: str | None = None,
    search: str | None = None,
    mine: bool = False,
    submitter: str | None = None,
    batch: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
) -> dict[str, Any]:
    """The `JobFilterInput` for these filters; `status` is one status, `statuses` any of several."""
    chosen = list(statuses or [])
    if status is not None:
        chosen.append(status)
    fields: dict[str, Any] = {
        "statuses": [s.upper() for s in chosen] or None,
        "tool": tool,
        "search": search,
        "submitterId": submitter,
        "batchId": batch,
        "createdAfter": _time(created_after),
        "createdBefore": _time(created_before),
    }
    result = {key: value for key, value in fields.items() if value is not None}
    result["mine"] = mine
    return result


@dataclass(frozen=True)
class Page:
    """One page of the history: its jobs, and the cursor of the next page if there is one."""

    jobs: list[Job]
    end_cursor: str | None
    has_next_page: bool


class History(Iterable[Job]):
    """A workspace's jobs, newest first. Iterating reads page after page as needed."""

    def __init__(
        self, client: Client, workspace: str, filter: dict[str, Any], page_size: int
    ) -> None:
        if not 1 <= page_size <= 100:
            raise ValueError("page_size is 1 to 100")
        self._client = client
        self._workspace = workspace
        self._filter = filter
        self._page_size = page_size

    def page(self, after: str | None = None) -> Page:
        """The page after cursor `after` (the first page without it)."""
        variables = {
            "workspaceId": self._workspace,
            "filter": self._filter,
            "first": self._page_size,
            "after": after,
        }
        jobs = self._client.execute(documents.HISTORY, variables)["workspace"]["jobs"]
        info = jobs["pageInfo"]
        return Page(
            jobs=[Job.from_graphql(node, self._client) for node in jobs["nodes"]],
            end_cursor=info["endCursor"],
            has_next_page=info["hasNextPage"],
        )

    def pages(self) -> Iterator[Page]:
        """Every page, from the first, each read when it is reached."""
        after: str | None = None
        while True:
            page = self.page(after)
            yield page
            if not page.has_next_page or page.end_cursor is None:
                return
            after = page.end_cursor

    def __iter__(self) -> Iterator[Job]:
        for page in self.pages():
            yield from page.jobs

    def to_list(self, limit: int | None = None) -> list[Job]:
        """The jobs, at most `limit` of them."""
        jobs: list[Job] = []
        for job in self:
            if limit is not None and len(jobs) >= limit:
                break
            jobs.append(job)
        return jobs

    def to_dataframe(self, limit: int | None = None) -> pd.DataFrame:
        """The jobs as a pandas DataFrame, one row a job (columns: `COLUMNS`), times as UTC
        timestamps. Needs pandas: `pip install jobgraph[pandas]`."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "History.to_dataframe needs pandas: pip install 'jobgraph[pandas]'"
            ) from None
        rows = [{column: getattr(job, column) for column in COLUMNS} for job in self.to_list(limit)]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        for column in ("created_at", "started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame
