"""The operator's handlers in-process: `kopf.operator()` on a thread with its own event loop.

kopf's `KopfRunner` closes its loop as soon as the operator returns. A TLS connection the operator
closed while stopping (kopf's discovery and watch requests are cancelled mid-flight) is then still
waiting for the API server's close_notify, its socket open; the garbage collector reports it later
as an unclosed transport, in whatever test runs then. This runner remembers the connections its
loop opened and, once the operator has returned (its cleanup handlers closed its own clients),
aborts those still open before it closes the loop, so none outlives the `with` block.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from types import TracebackType
from typing import Any

import kopf

from agentworker_operator import handlers


class _ClosingLoop(asyncio.SelectorEventLoop):
    """An event loop that can abort every connection it opened (kopf's and the operator's)."""

    def __init__(self) -> None:
        super().__init__()
        self._opened: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()

    async def create_connection(  # type: ignore[override]  # same signature, passed through
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        transport, protocol = await super().create_connection(*args, **kwargs)
        self._opened.add(transport)
        return transport, protocol

    async def abort_open_connections(self) -> None:
        """Abort every connection this loop opened; return once their sockets are closed."""
        for transport in list(self._opened):
            # Idempotent; for a TLS connection still waiting for close_notify, its socket too.
            transport.abort()
        # abort() schedules connection_lost (which closes the socket) with call_soon, ahead of
        # this task's next step: one yield to the loop runs them all. No timed wait.
        await asyncio.sleep(0)


class InProcessOperator:
    """`with InProcessOperator(namespace):` runs the operator's registry against the rig.

    It watches only `namespace`, standalone (no peering). On exit it stops the operator through
    kopf's stop flag, waits up to `timeout_s` for it, closes its connections and its loop, and
    raises what the operator raised.
    """

    def __init__(self, namespace: str, *, timeout_s: float = 60) -> None:
        self.namespace = namespace
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"operator-{namespace}")
        self._error: BaseException | None = None

    def __enter__(self) -> InProcessOperator:
        self._thread.start()
        if not self._ready.wait(self.timeout_s):
            self._stop.set()
            self._thread.join(self.timeout_s)
            raise AssertionError(f"the operator did not start in {self.timeout_s:.0f}s")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"the operator did not stop in {self.timeout_s:.0f}s")
        if self._error is not None:
            raise self._error from error

    def _run(self) -> None:
        loop = _ClosingLoop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                kopf.operator(
                    registry=handlers.registry,
                    standalone=True,
                    namespaces=[self.namespace],
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
        except BaseException as error:  # handed to the test's thread in __exit__
            self._error = error
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.abort_open_connections())
            loop.close()
