"""The wrapping of livekit-agents' AgentServer: options in, facts out, the handshake through its
own draining.

`install` wraps `AgentServer.run` and `AgentServer.drain` on a tested livekit-agents line and
steps aside otherwise. Each running server gets a `Companion`, which sets the spec's options
before livekit-agents reads them, moves livekit-agents' own health server to an ephemeral
loopback port (the contract server takes the pod's address and port), and serves the contract.

A retirement is livekit-agents' own drain flag: while it is set, the server answers every
availability request "not available" and reports WS_FULL, as it does when draining on SIGTERM.
Withdrawing it (DELETE /retire, or the expiry when no SIGTERM came) clears the flag again. The
compare-and-set holds because the check and the flag are set with no await between them, on the
loop that answers availability.

/worker's change stream (`surface.Changes`) hears of what the operator decides on from
livekit-agents' own events (registered, processes created, started, ready, given a job, closed),
its load samples (every 0.5 s: `_invoke_load_fnc`, where a line has it) and the companion's own
moves (retire, withdraw, expire, drain): no loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from types import ModuleType
from typing import Any

from agentworker_companion import TESTED_LINES, __version__, settings, state, surface

log = logging.getLogger("agentworker.companion")
ATTRIBUTE = "_agentworker_companion"
"""Where a running AgentServer keeps its Companion."""
CLASS_NEEDS = ("run", "drain", "aclose", "active_jobs", "_handle_assignment")
SERVER_NEEDS = (
    "_host", "_port", "_agent_name", "_server_type", "_load_threshold", "_drain_timeout",
    "_num_idle_processes", "_shutdown_process_timeout", "_initialize_process_timeout",
    "_job_memory_warn_mb", "_job_memory_limit_mb", "_max_retry", "_permissions", "_draining",
    "_closed", "_id", "_connecting", "_connection_failed",
)  # fmt: skip
"""The AgentServer attributes the companion reads or sets; all of them exist in every tested
line (1.4 to 1.8)."""


def version_line(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def install(module: ModuleType) -> None:
    """Wrap the module's AgentServer, or log why not and leave it untouched."""
    version = str(getattr(module, "__version__", ""))
    tested = ", ".join(f"{major}.{minor}" for major, minor in TESTED_LINES)
    if version_line(version) not in TESTED_LINES:
        log.warning(
            "agentworker-companion steps aside: livekit-agents %s is outside the tested lines "
            "(%s); the worker runs without the retire handshake, /readyz, rooms or metrics",
            version or "(unknown version)",
            tested,
        )
        return
    server_class = getattr(module, "AgentServer", None)
    missing = [name for name in CLASS_NEEDS if not hasattr(server_class, name)]
    if server_class is None or missing:
        log.warning("agentworker-companion steps aside: AgentServer lacks %s", missing)
        return
    original_run = server_class.run
    original_drain = server_class.drain

    @functools.wraps(original_run)
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            companion = await Companion.attach(self, module, version)
        except Exception:  # the worker runs whatever happens here
            log.exception("agentworker-companion failed to start; it steps aside")
            companion = None
        try:
            return await original_run(self, *args, **kwargs)
        finally:
            if companion is not None:
                await companion.aclose()

    @functools.wraps(original_drain)
    async def drain(self: Any, *args: Any, **kwargs: Any) -> Any:
        companion = getattr(self, ATTRIBUTE, None)
        if companion is not None:
            companion.drain_requested()
        return await original_drain(self, *args, **kwargs)

    server_class.run = run
    server_class.drain = drain


class Companion:
    """The contract for one running AgentServer."""

    def __init__(self, server: Any, module: ModuleType, version: str, found: settings.Settings):
        self.server = server
        self.module = module
        self.version = version
        self.settings = found
        self.retired = False
        self.drain_asked = False
        self.first_seen: dict[str, float] = {}
        self.assigned_at: dict[str, float] = {}
        self.expiry: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        """Status updates in flight (kept referenced until they end)."""
        self.metrics = surface.Metrics(self.facts)
        self.changes = surface.Changes()
        self.look_due = False
        """A look at the facts for `changes` is scheduled (`changed`)."""
        self.load_jobs = 0
        """The jobs running when livekit-agents' last load sample returned."""
        self.http: surface.Server | None = None

    @classmethod
    async def attach(cls, server: Any, module: ModuleType, version: str) -> Companion | None:
        """A started Companion for `server`, or None (logged) when it steps aside."""
        found = settings.from_environ(os.environ)
        # job processes inherit the environment: the control token stays in this process
        os.environ.pop("AGENT_CONTROL_TOKEN", None)
        missing = [name for name in SERVER_NEEDS if not hasattr(server, name)]
        if missing:
            log.warning("agentworker-companion steps aside: AgentServer lacks %s", missing)
            return None
        companion = cls(server, module, version, found)
        companion.apply_options()
        try:
            await companion.serve()
        except OSError as error:
            address = f"{found.host or '0.0.0.0'}:{found.port}"
            log.error(
                "agentworker-companion steps aside: cannot serve on %s (%s); livekit-agents "
                "serves its own health endpoints there",
                address,
                error.strerror or error,
            )
            server._host, server._port = found.host, found.port
            return None
        setattr(server, ATTRIBUTE, companion)
        server.on("worker_started", companion.worker_started)
        server.on("worker_registered", companion.changed)
        companion.watch_load_samples()
        original_assignment = server._handle_assignment

        def handle_assignment(assignment: Any) -> Any:
            companion.assigned_at[str(assignment.job.id)] = time.monotonic()
            return original_assignment(assignment)

        server._handle_assignment = handle_assignment
        log.info(
            "agentworker-companion serving the worker contract",
            extra={
                "companion": __version__,
                "livekit_agents": version,
                "address": companion.http.bound if companion.http else "",
                "agentworker": found.agentworker,
            },
        )
        return companion

    # -- options -----------------------------------------------------------------------------
    def apply_options(self) -> None:
        """The spec's options over the code's, before run() reads them."""
        s, found = self.server, self.settings
        for problem in found.problems:
            log.error("agentworker-companion: %s", problem)
        if found.agent_name:
            s._agent_name = found.agent_name
        if found.worker_type:
            s._server_type = getattr(self.module.ServerType, found.worker_type)
        pairs = (
            ("_load_threshold", found.load_threshold),
            ("_drain_timeout", found.drain_timeout_s),
            ("_num_idle_processes", found.num_idle_processes),
            ("_shutdown_process_timeout", found.shutdown_process_timeout_s),
            ("_initialize_process_timeout", found.initialize_process_timeout_s),
            ("_job_memory_warn_mb", found.job_memory_warn_mb),
            ("_job_memory_limit_mb", found.job_memory_limit_mb),
            ("_max_retry", found.max_retry),
        )
        for attribute, value in pairs:
            if value is not None:
                setattr(s, attribute, value)
        if found.permissions is not None:
            s._permissions = self.module.WorkerPermissions(**found.permissions)
        # livekit-agents' own health server moves out of the way of the contract's
        s._host, s._port = "127.0.0.1", 0

    # -- serving -----------------------------------------------------------------------------
    async def serve(self) -> None:
        app = surface.build_app(
            self.facts,
            self.metrics,
            changes=self.changes,
            retire=self.retire,
            unretire=self.unretire,
            control_token=self.settings.control_token,
        )
        self.http = surface.Server(app, host=self.settings.host, port=self.settings.port)
        await self.http.start()

    async def aclose(self) -> None:
        self._cancel_expiry()
        if self.http is not None:
            await self.http.aclose()

    def worker_started(self, *_: Any) -> None:
        pool = getattr(self.server, "_proc_pool", None)
        if pool is not None:
            pool.on("process_job_launched", self.job_launched)
            pool.on("process_closed", self.process_closed)
            for event in ("process_created", "process_started", "process_ready"):
                pool.on(event, self.changed)
        self.changed()

    # -- the change stream -------------------------------------------------------------------
    def changed(self, *_: Any) -> None:
        """Something the operator decides on may have changed: look once the current step of
        the loop is over (livekit-agents sets some facts just after the event that announces
        them: `_connecting` after "worker_registered", the load after its sample returns)."""
        if not self.look_due:
            self.look_due = True
            asyncio.get_running_loop().call_soon(self._look)

    def _look(self) -> None:
        self.look_due = False
        self.changes.observe(self.facts())

    def watch_load_samples(self) -> None:
        """Look after each load sample (livekit-agents' 0.5 s load task, and the one before an
        availability answer): a worker turns full or available there. A line without
        `_invoke_load_fnc` is looked at on its events alone."""
        original = getattr(self.server, "_invoke_load_fnc", None)
        if original is None:
            return

        async def invoke_load_fnc(*args: Any, **kwargs: Any) -> Any:
            load = await original(*args, **kwargs)
            self.load_jobs = len(getattr(self.server, "active_jobs", ()))
            self.changed()  # runs once the caller has stored the load
            return load

        self.server._invoke_load_fnc = invoke_load_fnc

    def job_launched(self, proc: Any) -> None:
        self.changed()
        info = getattr(proc, "running_job", None)
        self.metrics.jobs_started.inc()
        assigned = self.assigned_at.pop(str(info.job.id), None) if info is not None else None
        if assigned is not None:
            self.metrics.job_start_latency.observe(time.monotonic() - assigned)

    def process_closed(self, proc: Any) -> None:
        self.changed()
        info = getattr(proc, "running_job", None)
        if info is None:
            return  # an idle process
        self.first_seen.pop(str(info.job.id), None)
        outcome = str(getattr(getattr(proc, "status", None), "value", ""))
        if outcome == "success":
            self.metrics.jobs_succeeded.inc()
        elif outcome == "failed":
            self.metrics.jobs_failed.labels(reason="failed").inc()

    # -- facts -------------------------------------------------------------------------------
    def facts(self) -> state.Facts:
        s = self.server
        running = hasattr(s, "_proc_pool") and hasattr(s, "_worker_load")
        jobs = []
        now = time.time()
        for info in s.active_jobs if running else []:
            job_id = str(info.job.id)
            jobs.append(
                state.Job(
                    id=job_id,
                    room=str(info.job.room.name),
                    identity=str(info.accept_arguments.identity) or f"agent-{job_id}",
                    started_at=self.first_seen.setdefault(job_id, now),
                )
            )
        load = float(getattr(s, "_worker_load", 0.0))
        effective = load
        devmode = bool(getattr(s, "_devmode", False))
        if running and hasattr(s, "_get_effective_load"):
            effective = float(s._get_effective_load())
        threshold = float(self.module.ServerEnvOption.getvalue(s._load_threshold, devmode))
        on_the_way = int(getattr(s, "_reserved_slots", 0)) + len(
            getattr(s, "_pending_assignments", {})
        )
        idle = 0
        if running:
            idle = sum(1 for p in s._proc_pool.processes if not getattr(p, "running_job", None))
        inference = getattr(s, "_inference_executor", None)
        healthy = not s._connection_failed and (inference is None or inference.is_alive())
        registered = running and s._id != "unregistered" and not s._connecting and not s._closed
        return state.Facts(
            running=running,
            registered=registered,
            closed=bool(s._closed),
            drain_requested=self.drain_asked,
            retired=self.retired,
            load=load,
            effective_load=effective,
            load_threshold=threshold,
            jobs=tuple(jobs),
            on_the_way=on_the_way,
            idle_processes=idle,
            worker_id=str(s._id),
            agent_name=str(s._agent_name),
            worker_type=_job_type_name(s._server_type),
            sdk_version=self.version,
            protocol_version=int(getattr(self.module, "WORKER_PROTOCOL_VERSION", 0)),
            healthy=healthy,
            load_jobs=self.load_jobs,
        )

    # -- the handshake -----------------------------------------------------------------------
    async def retire(self) -> str:
        refusal = state.retire_refusal(self.facts())
        if refusal:
            log.info("agentworker-companion refused to retire", extra={"reason": refusal})
            return refusal
        if self.drain_asked or self.retired:
            return ""
        # no await from the check to here: no job can be accepted in between
        self.retired = True
        self.server._draining = True
        self.changed()
        self._cancel_expiry()
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_later(self.settings.retire_timeout_s, self._expired)
        await self._send_status()  # LiveKit hears WS_FULL before the retirer hears yes
        log.info(
            "retired: taking no new job", extra={"retire_timeout_s": self.settings.retire_timeout_s}
        )
        return ""

    async def unretire(self) -> str:
        refusal = state.unretire_refusal(self.facts())
        if refusal:
            log.info("agentworker-companion refused to withdraw", extra={"reason": refusal})
            return refusal
        if self.retired:
            self._serve_again()
            await self._send_status()
            log.info("retirement withdrawn")
        return ""

    def drain_requested(self) -> None:
        self.drain_asked = True
        self.changed()
        self._cancel_expiry()

    def _expired(self) -> None:
        self.expiry = None
        if not self.retired or self.drain_asked:
            return
        log.info(
            "retirement expired, taking jobs again",
            extra={"retire_timeout_s": self.settings.retire_timeout_s},
        )
        self._serve_again()
        task = asyncio.get_running_loop().create_task(self._send_status())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _serve_again(self) -> None:
        self._cancel_expiry()
        self.retired = False
        self.server._draining = False
        self.changed()

    def _cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    async def _send_status(self) -> None:
        if not hasattr(self.server, "_msg_chan"):
            return  # not running yet: its first status after registering says it
        with contextlib.suppress(Exception):  # closing: the status no longer matters
            await self.server._update_worker_status()


def _job_type_name(server_type: Any) -> str:
    try:
        from livekit.protocol import agent

        return str(agent.JobType.Name(server_type.value))
    except Exception:
        return str(getattr(server_type, "name", server_type))
