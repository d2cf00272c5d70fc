"""Subscriptions outlive a server restart: they connect again and go on where they were."""

import time
from pathlib import Path

from conftest import Server, jobgraph_binary, until_final

from jobgraph import FINAL_STATUSES, Client


def test_job_updates_and_events_survive_a_server_restart(tmp_path: Path) -> None:
    server = Server(jobgraph_binary(), tmp_path)
    server.start()
    try:
        client = Client(server.url, token=server.token)
        workspace = client.grant_credits(client.create_workspace("restarts").id, 100)
        events = client.events(workspace.id)

        job = client.submit("sleep", workspace=workspace.id, settings={"seconds": 3})
        updates = client.updates(job.id)
        assert updates.get(timeout=30).status in {"QUEUED", "PROCESSING"}
        while job.refresh().status != "PROCESSING":
            time.sleep(0.05)

        # Stopped, the server lets the running job finish within its grace period; the
        # client's websockets are closed meanwhile.
        server.stop()
        time.sleep(1)
        server.start()

        # The job's updates go on from the job as it is after the restart.
        statuses = [updates.get(timeout=60).status]
        while statuses[-1] not in FINAL_STATUSES:
            statuses.append(updates.get(timeout=60).status)
        assert statuses[-1] == "COMPLETED"
        updates.close()

        seen = until_final(events, job.id)
        events.close()
        # Every status, each change once: the events missed while the server was down came
        # from its log, resumed after the last cursor received.
        assert [e.kind for e in seen][0] == "CREATED"
        assert len({e.cursor for e in seen}) == len(seen)
        statuses = [e.status for e in seen]
        assert statuses[-1] == "COMPLETED" and statuses.count("COMPLETED") == 1
        assert "PROCESSING" in statuses
        client.close()
    finally:
        server.stop()
