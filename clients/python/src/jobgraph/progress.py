"""A job's progress as a tqdm bar: a widget in Jupyter, a line of text in a terminal."""

from __future__ import annotations

from tqdm.auto import tqdm

from .models import Job


class ProgressBar:
    """A bar from 0 to 100 % with the job's status and stage beside it."""

    def __init__(self, job_id: str) -> None:
        self._bar = tqdm(
            total=100,
            desc=job_id,
            unit="%",
            bar_format="{desc}{percentage:3.0f}%|{bar}| [{elapsed}{postfix}]",
        )
        self._described: str | None = None

    def show(self, job: Job) -> None:
        """Moves the bar to the job's progress (full once it completed) and names its state."""
        described = job.name
        if described != self._described:
            self._bar.set_description(described, refresh=False)
            self._described = described
        percent = 100.0 if job.status == "COMPLETED" else round(job.progress * 100, 1)
        self._bar.n = percent
        status = job.status if not job.stage or job.is_final else f"{job.status}: {job.stage}"
        self._bar.set_postfix_str(status, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
