"""The worker: wires the connection, the process pool, load reporting and the HTTP server.

Owns the worker's state (through `transition`; FULL or AVAILABLE from the last load reading, the
jobs running and the offers the intake holds, through `load.is_full`), whether an offer may be
taken, the retirement, its expiry and its withdrawal, the drain (on SIGTERM, or when the
connection to LiveKit gives up: running jobs do not need it), and the order things start and
stop in. It turns pool events into protocol messages and server messages into intake and pool
calls; the pool never sees the socket and the connection never sees a process. It tells /worker's
change stream (`http_api.Changes`) of every move, job start and end and load reading, so that the
operator's long polls hear of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine

from livekit.protocol import agent as agent_pb

from worker_runtime import cpu, http_api, load, protocol
from worker_runtime.connection import Connection, ConnectionFailed, ConnectionHandlers, Credentials
from worker_runtime.gauge import LoadGauge, Reading
from worker_runtime.intake import UNMEASURED, IntakeHooks, JobIntake
from worker_runtime.logs import LogFormat, WorkerLog
from worker_runtime.metrics import WorkerMetrics
from worker_runtime.options import WorkerOptions
from worker_runtime.pool import ProcessPool, RunningJob
from worker_runtime.reporter import JobReporter
from worker_runtime.state import (
    WorkerEvent,
    WorkerState,
    held_offer_refusal,
    is_ready,
    offer_refusal,
    retire_refusal,
    transition,
    unretire_refusal,
)
from worker_runtime.version import __version__

logger = logging.getLogger(__name__)


STATUS_INTERVAL_S = 2.5
"""How often the worker status goes to the server even when nothing changed (livekit-agents)."""
SAMPLE_INTERVAL_S = 0.5


class Worker:
    """A registered LiveKit agent worker; `run()` returns after a drain, or raises."""

    def __init__(
        self,
        opts: WorkerOptions,
        *,
        log_format: LogFormat,
        log_level: str,
        control_token: str = "",
    ) -> None:
        """`control_token` enables POST and DELETE /retire (the operator's victim handshake)."""
        self._opts = opts
        self._state = WorkerState.STARTING
        self._worker_id = ""
        self._retirement: asyncio.TimerHandle | None = None
        self._gave_up: ConnectionFailed | None = None
        self._log_fields: dict[str, object] = {"agent_name": opts.agent_name, "worker_id": ""}
        self._log = WorkerLog(logger, self._log_fields)
        self._meter = cpu.LoadMeter(opts.load_fnc)
        self._gauge = LoadGauge(
            lambda: self._meter.measure(self),
            running_jobs=lambda: len(self.active_jobs),
            on_reading=self._on_reading,
            log=self._log,
        )
        self._metrics = WorkerMetrics()
        self._changes = http_api.Changes()
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain_requested = asyncio.Event()
        self._status_due = asyncio.Event()
        self._reporter = JobReporter(
            send=lambda msg: self._conn.send(msg, hold=True),  # a job's end waits for LiveKit
            metrics=self._metrics,
            log=self._log,
            active_jobs=lambda: len(self.active_jobs),
            on_change=self._jobs_changed,
        )
        self._pool = ProcessPool.from_options(
            opts,
            log_format=log_format,
            log_level=log_level,
            on_started=self._reporter.started,
            on_ended=self._reporter.ended,
        )
        hooks = IntakeHooks(
            refresh_load=self._refresh_load,
            offer_refusal=self._offer_refusal,
            held_offer_refusal=lambda: held_offer_refusal(self._state),
            on_held_changed=self._move_by_load,
            worker_id=lambda: self._worker_id,
        )
        self._intake = JobIntake(
            opts,
            pool=self._pool,
            reporter=self._reporter,
            send=lambda msg: self._conn.send(msg),
            hooks=hooks,
            log=self._log,
        )
        handlers = ConnectionHandlers(
            register_message=self._register_message,
            on_registered=self._on_registered,
            on_message=self._on_message,
            on_lost=self._on_lost,
            on_gave_up=self._on_gave_up,
        )
        creds = Credentials(url=opts.ws_url, api_key=opts.api_key, api_secret=opts.api_secret)
        self._conn = Connection(
            creds, handlers, max_retry=opts.max_retry, http_proxy=opts.http_proxy
        )
        app = http_api.build_app(
            self.snapshot,
            self._metrics,
            changes=self._changes,
            retire=self.retire,
            unretire=self.unretire,
            control_token=control_token,
        )
        self._http = http_api.HttpServer(app, host=opts.host, port=opts.port)

    # -- what others read ------------------------------------------------------------------

    @property
    def active_jobs(self) -> list[RunningJob]:
        """The jobs running now (load_fnc(worker) may use it, as in the seeds)."""
        return self._pool.running_jobs

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def http_port(self) -> int:
        return self._http.bound_port

    def snapshot(self) -> http_api.WorkerSnapshot:
        jobs = tuple(
            http_api.JobSummary(id=r.job.id, room=r.job.room.name, started_at=r.started_at)
            for r in self.active_jobs
        )
        return http_api.WorkerSnapshot(
            worker_id=self._worker_id,
            state=self._state.value,
            ready=is_ready(self._state),
            draining=self._state is WorkerState.DRAINING,
            agent_name=self._opts.agent_name,
            worker_type=protocol.job_type_name(self._opts.worker_type),
            load=self._gauge.reading.load,
            load_threshold=self._opts.load_threshold,
            jobs=jobs,
            idle_processes=self._pool.idle_processes,
            retired=self._state is WorkerState.RETIRED,
            sdk_version=__version__,
            protocol_version=protocol.PROTOCOL_VERSION,
            load_jobs=self._gauge.reading.jobs,
        )

    def _move(self, event: WorkerEvent) -> None:
        before, self._state = self._state, transition(self._state, event)
        if before is not self._state:
            self._log.info(
                "worker state changed",
                extra={"from": before.value, "to": self._state.value},
            )
            self._metrics.draining.set(self._state is WorkerState.DRAINING)
            self._metrics.retired.set(self._state is WorkerState.RETIRED)
            self._status_due.set()
            self._publish()
            self._intake.reconsider()

    def _jobs_changed(self) -> None:
        """A job was handed to a process, or its process ended."""
        self._status_due.set()
        self._publish()

    def _publish(self) -> None:
        """Bump /worker's generation, waking its long polls, if what the operator decides on
        changed (`http_api.decision_view`)."""
        self._changes.observe(self.snapshot())

    # -- lifecycle ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Ask for a graceful stop (SIGTERM): take nothing new, wait for the jobs, exit."""
        self._drain_requested.set()

    def retire(self) -> str:
        """Stop taking jobs now if none is held; the refusal reason ("busy") otherwise.

        A retirement lasts until SIGTERM or, if none comes, `retire_timeout`; retiring again
        restarts that clock.
        """
        refusal = retire_refusal(
            self._state, active_jobs=len(self.active_jobs), pending_offers=self._intake.pending
        )
        if refusal:
            self._log.info("refused to retire", extra={"reason": refusal})
            return refusal
        again = self._state is WorkerState.RETIRED
        self._move(WorkerEvent.RETIRE)
        if self._state is not WorkerState.RETIRED:  # draining already: nothing to expire
            return ""
        self._cancel_retirement()
        loop = asyncio.get_running_loop()
        self._retirement = loop.call_later(self._opts.retire_timeout, self._retirement_expired)
        if not again:
            self._send_status()  # LiveKit hears WS_FULL before the retirer hears yes
            self._log.info(
                "retired: taking no new job", extra={"retire_timeout_s": self._opts.retire_timeout}
            )
        return ""

    def unretire(self) -> str:
        """Withdraw a retirement and serve again at once; the refusal reason when draining.

        A worker that is not retired changes nothing; a draining or closed one stays out
        ("draining", "closed").
        """
        refusal = unretire_refusal(self._state)
        if refusal:
            self._log.info("refused to withdraw the retirement", extra={"reason": refusal})
            return refusal
        if self._state is WorkerState.RETIRED:
            self._cancel_retirement()
            self._serve_again(WorkerEvent.UNRETIRE)
            self._log.info("retirement withdrawn", extra={"state": self._state.value})
        return ""

    def _retirement_expired(self) -> None:
        """No SIGTERM followed the retirement (the retirer went away): serve again."""
        self._retirement = None
        if self._state is not WorkerState.RETIRED:
            return
        self._log.warning(
            "retirement expired, taking jobs again",
            extra={"retire_timeout_s": self._opts.retire_timeout},
        )
        self._serve_again(WorkerEvent.RETIREMENT_EXPIRED)

    def _serve_again(self, event: WorkerEvent) -> None:
        """Leave RETIRED through `event`, into the state the connection and the load call for."""
        self._move(event)
        if self._conn.registered:
            self._move_by_load()
        else:
            self._move(WorkerEvent.CONNECTION_LOST)
        self._send_status()

    def _cancel_retirement(self) -> None:
        if self._retirement is not None:
            self._retirement.cancel()
            self._retirement = None

    async def run(self) -> None:
        """Serve until drained; `PortInUse` when the HTTP server cannot start.

        A drain follows SIGTERM, or the connection to LiveKit giving up; in that case `run`
        raises its `ConnectionFailed` once the running jobs ended (the connection keeps trying
        meanwhile, so that their ends are still reported).
        """
        await self._http.start()
        conn_task: asyncio.Task[None] | None = None
        try:
            self._pool.start()
            conn_task = asyncio.create_task(self._conn.run(), name="connection")
            self._spawn(self._report_status_forever(), "status")
            drain_task = asyncio.create_task(self._drain_requested.wait(), name="drain-signal")
            await asyncio.wait([conn_task, drain_task], return_when=asyncio.FIRST_COMPLETED)
            drain_task.cancel()
            await asyncio.gather(drain_task, return_exceptions=True)
            if conn_task.done():  # a bug in the connection: the jobs do not need it anyway
                self._log.error("the connection to LiveKit stopped; draining")
            await self._drain()
        finally:
            await self._aclose()
        if conn_task is not None:
            await conn_task  # raises what broke it, if anything did
        if self._gave_up is not None:
            raise self._gave_up

    async def _drain(self) -> None:
        self._cancel_retirement()
        self._move(WorkerEvent.DRAIN)
        self._send_status()
        jobs = len(self.active_jobs)
        timeout_s = self._opts.drain_timeout
        self._log.info("draining", extra={"active_jobs": jobs, "drain_timeout_s": timeout_s})
        deadline = time.monotonic() + timeout_s
        await self._intake.wait(timeout_s)  # jobs accepted, on their way to a process, run too
        if not await self._pool.wait_for_jobs(max(0.0, deadline - time.monotonic())):
            self._log.warning(
                "drain timeout reached, ending the remaining jobs",
                extra={"active_jobs": len(self.active_jobs), "waiting": self._intake.pending},
            )
        else:
            self._log.info("all jobs ended, stopping")

    async def _aclose(self) -> None:
        # Not quite the reverse of start: the jobs end first, while the connection can still
        # report them, and the HTTP server goes last so that probes see the drain to the end.
        self._cancel_retirement()
        await self._pool.aclose()  # jobs still waiting for a process fail
        await self._intake.aclose()  # every accepted job that did not run is reported
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._gauge.aclose()
        await self._conn.aclose()
        self._move(WorkerEvent.CLOSE)
        await self._http.aclose()

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "worker task failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    # -- load and status ---------------------------------------------------------------------

    async def _report_status_forever(self) -> None:
        """Sample the load every 0.5 s, and at once when load_fnc's jobs changed (a job that
        started is measured before the next offer); send the status on any change and every
        2.5 s."""
        last_sent = next_sample = 0.0
        while True:
            if time.monotonic() >= next_sample or self._reading_is_stale():
                await self._gauge.refresh()
                next_sample = time.monotonic() + SAMPLE_INTERVAL_S
            now = time.monotonic()
            if self._status_due.is_set() or now - last_sent >= STATUS_INTERVAL_S:
                self._status_due.clear()
                self._send_status()
                last_sent = now
            with contextlib.suppress(TimeoutError):
                timeout = max(0.0, next_sample - time.monotonic())
                await asyncio.wait_for(self._status_due.wait(), timeout)

    def _reading_is_stale(self) -> bool:
        return self._opts.load_fnc is not None and (
            len(self.active_jobs) != self._gauge.reading.jobs
        )

    async def _refresh_load(self) -> None:
        """Before an offer is decided: a load_fnc is asked again (livekit-agents does so too),
        the CPU window is not (one more sample says nothing new)."""
        if self._opts.load_fnc is not None:
            await self._gauge.refresh()
        self._move_by_load()

    def _on_reading(self, reading: Reading) -> None:
        self._metrics.load.set(reading.load)
        self._metrics.idle_processes.set(self._pool.idle_processes)
        self._move_by_load()
        self._publish()  # the idle processes have no event of their own: every 0.5 s at most
        self._intake.reconsider()

    def _occupancy(self) -> load.Occupancy:
        reading = self._gauge.reading
        # a union: a job that just started still holds its offer's slot until its launch returns
        held = len({r.job.id for r in self.active_jobs} | self._intake.held_ids)
        return load.Occupancy(load=reading.load, measured_jobs=reading.jobs, held_jobs=held)

    def _move_by_load(self) -> None:
        """The one place the load moves the state (`load.is_full`)."""
        full = load.is_full(self._occupancy(), threshold=self._opts.load_threshold)
        self._move(
            WorkerEvent.LOAD_ABOVE_THRESHOLD if full else WorkerEvent.LOAD_AT_OR_BELOW_THRESHOLD
        )

    def _offer_refusal(self, waited: bool) -> str:
        """Why a job offer is declined now, or "": the state's reason, else UNMEASURED while
        no job's cost was measured (`load.awaits_first_measurement`)."""
        refusal = offer_refusal(self._state)
        if refusal:
            return refusal
        unknown = load.awaits_first_measurement(
            self._occupancy(),
            threshold=self._opts.load_threshold,
            prewarmed=self._opts.num_idle_processes,
            waited=waited,
        )
        return UNMEASURED if unknown else ""

    def _send_status(self) -> None:
        self._conn.send(
            protocol.worker_status(
                full=self._state is not WorkerState.AVAILABLE,
                load=self._gauge.reading.load,
                job_count=len(self.active_jobs),
                draining=self._state is WorkerState.DRAINING,
            )
        )

    # -- connection events -------------------------------------------------------------------

    def _register_message(self) -> agent_pb.WorkerMessage:
        return protocol.register(
            worker_type=self._opts.worker_type,
            agent_name=self._opts.agent_name,
            version=__version__,
            permissions=self._opts.permissions,
            ping_interval_s=10,
        )

    def _on_registered(self, resp: agent_pb.RegisterWorkerResponse) -> None:
        self._worker_id = resp.worker_id
        self._log_fields["worker_id"] = resp.worker_id
        self._metrics.registered.set(1)
        self._log.info(
            "registered with LiveKit",
            extra={
                "worker_id": resp.worker_id,
                "server_version": resp.server_info.version,
            },
        )
        self._move(WorkerEvent.REGISTERED)
        self._move_by_load()  # never advertise AVAILABLE while the last load was above threshold
        self._send_status()
        running = [r.job.id for r in self.active_jobs]
        if running:
            self._conn.send(protocol.migrate(running))
            self._log.info("reported running jobs after registering", extra={"job_ids": running})

    def _on_gave_up(self, error: ConnectionFailed) -> None:
        """The connection gave up: drain (the jobs' media does not need it), then exit non-zero."""
        self._gave_up = error
        self._log.error(
            "LiveKit connection given up, draining the running jobs before exiting",
            extra={"error": str(error), "active_jobs": len(self.active_jobs)},
        )
        self._drain_requested.set()

    def _on_lost(self, reason: str) -> None:
        self._metrics.registered.set(0)
        extra = {"reason": reason, "active_jobs": len(self.active_jobs)}
        if reason == "closing":
            self._log.info("closed the connection to LiveKit", extra=extra)
        else:
            self._log.warning("lost the connection to LiveKit", extra=extra)
        self._move(WorkerEvent.CONNECTION_LOST)
        self._intake.lose_assignments("the connection to LiveKit dropped")

    def _on_message(self, msg: agent_pb.ServerMessage) -> None:
        which = protocol.kind(msg)
        if which == "availability":
            self._intake.offer(msg.availability)
        elif which == "assignment":
            self._intake.assign(msg.assignment)
        elif which == "termination":
            job_id = msg.termination.job_id
            self._log.info("server asked to end a job", extra={"job_id": job_id})
            self._spawn(self._terminate(job_id), f"terminate-{job_id}")
        elif which == "pong":
            self._log.debug(
                "pong", extra={"rtt_ms": int(time.time() * 1000) - msg.pong.last_timestamp}
            )
        else:
            self._log.warning("unexpected server message", extra={"kind": which})

    async def _terminate(self, job_id: str) -> None:
        await self._pool.terminate(job_id, "terminated by the server")
