"""Subscriptions as plain blocking iterators.

gql runs subscriptions on asyncio, and a Jupyter kernel already runs an asyncio loop in its
main thread, where a second one cannot run. So each subscription gets its own thread and
loop, and hands what it receives to the caller's thread through a queue: the caller iterates
as over any iterator, in a notebook cell or a script alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from gql import Client as GqlClient
from gql import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from .errors import JobgraphError, ServerUnreachable

T = TypeVar("T")

# What the subscription's thread puts on the queue.
_ITEM, _END, _ERROR = "item", "end", "error"


#: How long a subscription that lost its connection keeps trying to open another.
RECONNECT_SECONDS = 60.0


class Subscription(Generic[T], Iterator[T]):
    """A live subscription: iterate over it, or take items with `get(timeout)`; `close()` it
    (or use it as a context manager) to end it. Iteration stops when the server completes
    the subscription; a refusal raises `JobgraphError` with the server's code.

    A connection lost after it was open (a server restarting, a network change) is opened
    again, for up to `reconnect_seconds`, and the subscription started anew from
    `make_request(last)`, where `last` is the last item received: `workspaceJobEvents` resumes
    after its cursor, `jobUpdated` starts again with the job as it is then. Past that time the
    iteration raises `ServerUnreachable`.
    """

    def __init__(
        self,
        make_transport: Callable[[], WebsocketsTransport],
        make_request: Callable[[dict[str, Any] | None], GraphQLRequest],
        convert: Callable[[dict[str, Any]], T],
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        self._make_transport = make_transport
        self._make_request = make_request
        self._convert = convert
        self._reconnect_seconds = reconnect_seconds
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._done = False
        # Set once the websocket is open and the server accepted its connection_init (or it
        # failed): the constructor returns then, so the subscription starts right after.
        self._connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(self._receive())
        self._thread = threading.Thread(target=self._run, name="jobgraph-subscription", daemon=True)
        self._thread.start()
        self._connected.wait(timeout=30)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._task)
        except BaseException:  # the task's own outcome is already on the queue
            pass
        finally:
            self._loop.close()

    async def _receive(self) -> None:
        last: dict[str, Any] | None = None
        lost_at: float | None = None
        delay = 0.25
        try:
            while True:
                try:
                    async with GqlClient(transport=self._make_transport()) as session:
                        self._connected.set()
                        lost_at, delay = None, 0.25
                        async for data in session.subscribe(self._make_request(last)):
                            last = data
                            self._queue.put((_ITEM, data))
                    self._queue.put((_END, None))
                    return
                except TransportQueryError as err:
                    self._queue.put((_ERROR, JobgraphError.from_graphql_errors(err.errors or [])))
                    return
                except Exception as err:  # connection refused or lost, protocol errors
                    now = time.monotonic()
                    lost_at = lost_at if lost_at is not None else now
                    # A subscription that never connected fails at once: a wrong URL, a
                    # refused token.
                    if not self._connected.is_set() or now - lost_at >= self._reconnect_seconds:
                        failed = ServerUnreachable(f"the subscription failed: {err!r}")
                        self._queue.put((_ERROR, failed))
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        except asyncio.CancelledError:
            self._queue.put((_END, None))
        finally:
            self._connected.set()

    def get(self, timeout: float | None = None) -> T:
        """The next item; `StopIteration` once the subscription has ended, `TimeoutError` when
        nothing came within `timeout` seconds."""
        if self._done:
            raise StopIteration
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Short waits, so that Ctrl-C (a kernel interrupt) is seen promptly.
            left = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                kind, value = self._queue.get(timeout=left)
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"nothing received within {timeout} seconds") from None
        if kind == _ITEM:
            return self._convert(value)
        self._done = True
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def __next__(self) -> T:
        return self.get()

    def __iter__(self) -> Subscription[T]:
        return self

    def close(self) -> None:
        """Ends the subscription and closes its websocket."""
        self._done = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._task.cancel)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=10)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
