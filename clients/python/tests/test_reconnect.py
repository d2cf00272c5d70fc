"""Subscriptions outlive a server restart: they connect again and go on where they were."""

import threading
import time
from pathlib import Path

from conftest import Server, jobgraph_binary, started, until_final

from jobgraph import Client, Job


def test_a_wait_and_an_events_iterator_survive_a_server_restart(tmp_path: Path) -> None:
    server = Server(jobgraph_binary(), tmp_path)
    server.start()
    try:
        client = Client(server.url, token=server.token)
        workspace = client.grant_credits(client.create_workspace("restarts").id, 100)
        events = client.events(workspace.id)
        started(client, workspace, events)

        job = client.submit("sleep", workspace=workspace.id, settings={"seconds": 3})
        waited: list[Job | BaseException] = []

        def wait() -> None:
            try:
                waited.append(job.wait(progress=False, timeout=90))
            except BaseException as err:
                waited.append(err)

        waiter = threading.Thread(target=wait)
        waiter.start()
        while job.refresh().status != "PROCESSING":
            time.sleep(0.05)

        # Stopped, the server lets the running job finish within its grace period; the
        # client's websockets are closed meanwhile.
        server.stop()
        time.sleep(1)
        server.start()

        waiter.join(timeout=120)
        assert len(waited) == 1 and isinstance(waited[0], Job), waited
        assert waited[0].status == "COMPLETED"

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
