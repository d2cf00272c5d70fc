"""The live events of a workspace, as an iterator, resumed from a cursor."""

import pytest
from conftest import until_final

from jobgraph import Client, Event, JobgraphError, Workspace


def test_events_follow_a_job_from_creation_to_completion(
    client: Client, workspace: Workspace
) -> None:
    with client.events(workspace.id) as events:
        job = client.submit(
            "sleep", workspace=workspace.id, settings={"seconds": 1.5, "stages": ["One", "Two"]}
        )
        seen = until_final(events, job.id)

    assert (seen[0].kind, seen[0].status) == ("CREATED", "QUEUED")
    assert seen[-1].kind == "UPDATED"
    assert seen[-1].status == "COMPLETED"
    assert seen[-1].job is not None and seen[-1].job.result["stages"] == ["One", "Two"]
    stages = {e.job.stage for e in seen if e.job is not None}
    assert {"One", "Two"} <= stages
    assert len({e.cursor for e in seen}) == len(seen)

    # Resuming after the first event replays the rest from the log, in order: every status
    # change, with a job's successive progress updates coalesced into the last one.
    with client.events(workspace.id, after=seen[0].cursor) as replay:
        replayed = until_final(replay, job.id)
    cursors = [e.cursor for e in seen]
    assert all(e.cursor in cursors[1:] for e in replayed)
    assert [cursors.index(e.cursor) for e in replayed] == sorted(
        cursors.index(e.cursor) for e in replayed
    )
    assert _statuses(replayed) == _statuses(seen[1:]) == ["PROCESSING", "COMPLETED"]
    assert replayed[-1].cursor == seen[-1].cursor


def _statuses(events: list[Event]) -> list[str]:
    """The statuses in order, each once per change."""
    statuses: list[str] = []
    for event in events:
        if event.status and (not statuses or statuses[-1] != event.status):
            statuses.append(event.status)
    return statuses


def test_events_pass_the_history_filters(client: Client, workspace: Workspace) -> None:
    with client.events(workspace.id, statuses=["COMPLETED"], tool="noop") as events:
        client.submit("sleep", workspace=workspace.id, settings={"seconds": 1})
        noop = client.submit("noop", workspace=workspace.id)
        event = events.get(timeout=30)
    assert (event.job_id, event.status) == (noop.id, "COMPLETED")
    assert event.job is not None and event.job.tool == "noop"


def test_a_job_updates_iterator_starts_with_the_job_now(
    client: Client, workspace: Workspace
) -> None:
    job = client.submit("noop", workspace=workspace.id).wait(progress=False)
    with client.updates(job.id) as updates:
        first = updates.get(timeout=30)
    assert (first.id, first.status) == (job.id, "COMPLETED")


def test_an_event_cursor_moves_with_the_log_and_is_a_members(
    client: Client, workspace: Workspace
) -> None:
    before = client.event_cursor(workspace.id)
    client.submit("noop", workspace=workspace.id).wait(progress=False)
    after = client.event_cursor(workspace.id)
    assert int(after[2:]) > int(before[2:])
    with pytest.raises(JobgraphError) as refused:
        client.event_cursor("ws_0193b1e2c3d47e8f9a0b1c2d3e4f5a6b")
    assert refused.value.code == "NOT_FOUND"
