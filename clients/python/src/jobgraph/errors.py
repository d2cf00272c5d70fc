"""What the client raises: every refusal of the server carries its `extensions.code`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Job


class JobgraphError(Exception):
    """A request the server refused, or could not be reached for.

    `code` is the server's stable `extensions.code` (`NOT_FOUND`, `BAD_USER_INPUT`,
    `INSUFFICIENT_CREDITS`, ...), `field` the input it names when it names one, and
    `errors` every GraphQL error of the answer as the server sent it.
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        field: str | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.message = message
        self.code = code
        self.field = field
        self.errors = list(errors)

    @classmethod
    def from_graphql_errors(cls, errors: Sequence[Mapping[str, Any]]) -> JobgraphError:
        """The error for a GraphQL answer's `errors`, named after the first one."""
        if not errors:
            return cls("the server answered with an empty list of errors")
        first = errors[0]
        extensions = first.get("extensions") or {}
        field = extensions.get("field")
        return cls(
            str(first.get("message", "")),
            extensions.get("code"),
            field=str(field) if field is not None else None,
            errors=errors,
        )


class ServerUnreachable(JobgraphError):
    """The server could not be reached, or answered with something that is not GraphQL."""


class JobFailed(JobgraphError):
    """A job that was waited for ended FAILED, TIMEOUT or CANCELLED.

    `job` is the job as it ended; `code` is its `errorCode` when it has one (such as
    `DOWNLOAD_FAILED`), else its status.
    """

    def __init__(self, job: Job) -> None:
        detail = f": {job.error_message}" if job.error_message else ""
        super().__init__(
            f"job {job.id} ({job.tool}) ended {job.status}{detail}",
            job.error_code or job.status,
        )
        self.job = job
