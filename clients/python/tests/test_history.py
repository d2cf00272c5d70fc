"""The history: filters, keyset pages, and the DataFrame."""

import sys
from datetime import datetime, timedelta, timezone

import pytest

from jobgraph import COLUMNS, Client, Workspace


def _submit_noops(client: Client, workspace: Workspace, count: int) -> list:
    return [
        client.submit("noop", workspace=workspace.id, name=f"noop {i}").wait(progress=False)
        for i in range(count)
    ]


def test_history_iterates_over_every_page_newest_first(
    client: Client, workspace: Workspace
) -> None:
    jobs = _submit_noops(client, workspace, 5)
    history = client.history(workspace.id, page_size=2)

    pages = list(history.pages())
    assert [len(page.jobs) for page in pages] == [2, 2, 1]
    assert [page.has_next_page for page in pages] == [True, True, False]
    assert [job.id for job in history] == [job.id for job in reversed(jobs)]
    assert [job.id for job in history.to_list(limit=3)] == [job.id for job in reversed(jobs)][:3]
    # A page is read from the cursor of the one before it.
    assert history.page(after=pages[0].end_cursor).jobs == pages[1].jobs


def test_history_filters_by_status_tool_name_and_time(client: Client, workspace: Workspace) -> None:
    _submit_noops(client, workspace, 2)
    sleeping = client.submit(
        "sleep", workspace=workspace.id, name="long nap", settings={"seconds": 60}
    )

    assert [j.id for j in client.history(workspace.id, tool="sleep")] == [sleeping.id]
    assert [j.id for j in client.history(workspace.id, search="NAP")] == [sleeping.id]
    assert len(client.history(workspace.id, status="completed").to_list()) == 2
    assert len(client.history(workspace.id, statuses=["QUEUED", "PROCESSING"]).to_list()) == 1
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert client.history(workspace.id, created_after=future).to_list() == []
    assert len(client.history(workspace.id, created_before=future, mine=True).to_list()) == 3
    sleeping.cancel()


def test_history_dataframe_has_a_row_per_job(client: Client, workspace: Workspace) -> None:
    jobs = _submit_noops(client, workspace, 3)

    frame = client.history_dataframe(workspace.id)

    assert list(frame.columns) == COLUMNS
    assert list(frame["id"]) == [job.id for job in reversed(jobs)]
    assert set(frame["status"]) == {"COMPLETED"}
    assert set(frame["tool"]) == {"noop"}
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert (frame["finished_at"] >= frame["created_at"]).all()
    assert len(client.history(workspace.id).to_dataframe(limit=2)) == 2


def test_a_dataframe_without_pandas_says_how_to_install_it(
    client: Client, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'jobgraph\[pandas\]'"):
        client.history_dataframe(workspace.id)
