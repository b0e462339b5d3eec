"""The long polls of the simulated workers' /worker: the operator's change stream, simulated.

`SimWatch` is what `watcher.WorkerWatch` is on the simulated world: it polls the pod IPs the
sync round says (`follow`), and, each step of the world (`step`), answers the polls as the
workers would: at once the first time (a new worker, or one that answers again after failed
polls), then when the worker's generation moves on (its decision view changed:
`World.worker_document`) or its process is another, or after `watcher.WAIT_S` with nothing new.
Each answer is the document of that moment, its load included (the load alone brings no answer);
an answer that brings news tells the fleet (`on_change`). A worker that cannot answer brings
nothing: no process yet or any more, or /worker refused (404), fails the poll at once; a stalled
worker holds it until the client gives up (`WAIT_S + ANSWER_MARGIN_S` after it was sent). A
failed poll forgets what was heard and is sent again after `FIRST_RETRY_S`, doubling up to
`RETRY_S`, as `WorkerWatch` does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from agentworker_operator import watcher
from agentworker_operator.store import Key
from tests.unit.operator.sim import world as worlds


@dataclass(slots=True)
class _Poll:
    """One followed worker's poll: the request out now, or the pause before the next."""

    key: Key
    sent: float
    """When the request now out was sent (or will be, after a failure's pause)."""
    last: tuple[int, str] | None = None
    """(generation, instance) of the last answer; None until one, and after a failure."""
    pause_s: float = watcher.FIRST_RETRY_S
    """The pause after the next failure."""


class SimWatch:
    """`watcher.Watch` on the simulated world; the simulation steps it (`step`) while its
    operator process runs."""

    def __init__(self, world: worlds.World, on_change: Callable[[Key], None]) -> None:
        self._world = world
        self._on_change = on_change
        self._polls: dict[tuple[Key, str], _Poll] = {}
        self._heard: dict[str, watcher.Heard] = {}

    def follow(self, key: Key, ips: Collection[str]) -> None:
        """Poll exactly these pod IPs for the fleet `key`; a new one is first asked at the next
        step (a real poll's first answer lands a few milliseconds after the round)."""
        wanted = {ip for ip in ips if ip}
        for owner, ip in list(self._polls):
            if owner == key and ip not in wanted:
                del self._polls[(owner, ip)]
                self._heard.pop(ip, None)
        for ip in wanted:
            if (key, ip) not in self._polls:
                self._polls[(key, ip)] = _Poll(key=key, sent=self._world.now)

    def forget(self, key: Key) -> None:
        self.follow(key, ())

    def heard(self, ip: str) -> watcher.Heard | None:
        return self._heard.get(ip)

    def current(self, ip: str) -> bool:
        """Whether what was heard from ip is the worker as it is now: its poll is held by a
        worker that answers (every change of its decision view is heard the step it happens)."""
        held = any(poll.last is not None for (_, each), poll in self._polls.items() if each == ip)
        return held and self._reach(ip) == "answers"

    async def aclose(self) -> None:
        """The operator process is gone: its polls with it."""
        self._polls.clear()
        self._heard.clear()

    def step(self) -> None:
        """The answers of this step, after the world moved."""
        now = self._world.now
        for (_, ip), poll in list(self._polls.items()):
            if now < poll.sent:
                continue  # pausing after a failure
            match self._reach(ip):
                case "answers":
                    self._answer(ip, poll)
                case "refuses":
                    self._fail(ip, poll)
                case "hangs" if now >= poll.sent + watcher.WAIT_S + watcher.ANSWER_MARGIN_S:
                    self._fail(ip, poll)  # the client gave up

    def _reach(self, ip: str) -> str:
        """How the worker at ip takes a request now, as `SimScraper.fetch` finds it: it hangs
        (stalled), refuses it (no process: the connection is refused; or /worker answers 404),
        or answers."""
        pod = self._world.pod_by_ip(ip)
        p = pod.process if pod is not None else None
        if p is not None and p.stalled_until > self._world.now:
            return "hangs"
        return "refuses" if p is None or p.unreadable else "answers"

    def _answer(self, ip: str, poll: _Poll) -> None:
        now = self._world.now
        pod = self._world.pod_by_ip(ip)
        process = pod.process if pod is not None else None
        assert process is not None, ip
        document = self._world.worker_document(process)
        stamp = (int(document["generation"]), str(document["instance"]))
        if poll.last == stamp and now < poll.sent + watcher.WAIT_S:
            return  # held: nothing new yet
        self._heard[ip] = watcher.Heard(document=document, at=now, generation=stamp[0])
        news = poll.last != stamp
        poll.last, poll.sent, poll.pause_s = stamp, now, watcher.FIRST_RETRY_S
        if news:
            self._world.saw("a worker's change heard")
            self._on_change(poll.key)

    def _fail(self, ip: str, poll: _Poll) -> None:
        now = self._world.now
        poll.last = None
        self._heard.pop(ip, None)
        poll.sent = now + poll.pause_s
        poll.pause_s = min(poll.pause_s * 2, watcher.RETRY_S)
