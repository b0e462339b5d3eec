"""The measurements: starts, idle memory, sequential dispatches and bursts, interleaved.

Owns what is measured and in which order, and the samples it produces. Each phase alternates
the two runtimes (the order flips every repetition) and leaves every worker it started stopped,
also when it fails. It renders nothing; `bench.runtime` turns the samples into the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import report
from bench.dispatching import Dispatcher, EntryLog
from bench.runtimes import LiveKitServer, agent_name
from bench.workers import RuntimeSpec, WorkerProcess

MB = 1024 * 1024
REGISTER_TIMEOUT_S = 60.0
ENTRY_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 120.0
BURST_TIMEOUT_S = 300.0
BURST_STALL_S = 30.0
"""A burst ends early when no entrypoint ran for this long (the missing jobs failed)."""


StartProbe = Callable[[str, WorkerProcess], Awaitable[None]]
"""probe(runtime key, worker): a look at a started, warm worker (e.g. its memory)."""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    """How much to measure."""

    starts: int = 7
    """Measured starts per runtime (one more, unmeasured, warms the page cache)."""
    dispatches: int = 25
    """Sequential dispatches per runtime."""
    burst_size: int = 100
    """Dispatches created at once in a burst."""
    burst_rounds: int = 3
    """Bursts per runtime."""
    idle_processes: int = 2
    """num_idle_processes of both workers."""
    memory_samples: int = 5
    """Memory samples per runtime, 1 s apart."""
    settle_s: float = 1.0
    """Pause after a worker is idle again, before the next dispatch."""
    runtimes: tuple[str, ...] = (report.OURS, report.OFFICIAL)
    """Which runtimes to run; one alone is for developing the harness."""


@dataclass(slots=True)
class Samples:
    """Everything measured for one runtime."""

    register_s: list[float] = field(default_factory=list)
    register_server_s: list[float] = field(default_factory=list)
    starts: list[tuple[str, float]] = field(default_factory=list)
    """(worker id, Unix time just before exec) of each measured start."""
    warm_s: list[float] = field(default_factory=list)
    dispatch_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    worker_ms: list[float] = field(default_factory=list)
    sequential: list[tuple[str, float, float]] = field(default_factory=list)
    """(room, Unix time before create_dispatch, Unix time of the entry) of each dispatch."""
    idle_rss_mb: list[float] = field(default_factory=list)
    idle_pss_mb: list[float] = field(default_factory=list)
    idle_processes: list[float] = field(default_factory=list)
    idle_breakdown: list[tuple[str, float]] = field(default_factory=list)
    """(role, RSS MB) of each process in the last idle sample."""
    burst_s: list[float] = field(default_factory=list)
    burst_job_ms: list[float] = field(default_factory=list)
    burst_peak_rss_mb: list[float] = field(default_factory=list)
    burst_ran: list[float] = field(default_factory=list)
    """How many of each burst's entrypoints ran."""
    after_rss_mb: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def interleaved(keys: Sequence[str], i: int) -> list[str]:
    """Both runtimes, in an order that flips with every repetition."""
    return list(keys) if i % 2 == 0 else list(reversed(keys))


async def measure_starts(
    specs: dict[str, RuntimeSpec],
    cfg: BenchConfig,
    logs: Path,
    samples: dict[str, Samples],
    probe: StartProbe | None = None,
) -> None:
    """Start, register, warm, stop: `cfg.starts` times each, after one unmeasured start.
    `probe`, when given, looks at each measured worker once it is warm, before it stops."""
    for i in range(cfg.starts + 1):
        for key in interleaved(list(specs), i):
            worker = WorkerProcess(specs[key], log_path=logs / f"{key}-start-{i}.log")
            try:
                await worker.start()
                registered = await worker.wait_registered(REGISTER_TIMEOUT_S)
                warm = await worker.wait_warm(cfg.idle_processes, REGISTER_TIMEOUT_S)
                if probe is not None and i > 0:
                    await probe(key, worker)
            finally:
                await worker.stop()
            if worker.warm_failed:
                samples[key].problems.append(f"start {i}: registered before its pool was warm")
            if i > 0:
                samples[key].register_s.append(registered)
                samples[key].warm_s.append(warm)
                samples[key].starts.append((worker.worker_id, worker.started_wall))
            note(f"start {i} {key}: registered {registered:.3f}s, warm {warm:.3f}s")


def registration_by_server(samples: Samples, registered: dict[str, float]) -> None:
    """Start -> registered as the server logged it, for the starts it logged."""
    for worker_id, started in samples.starts:
        if worker_id in registered:
            samples.register_server_s.append(registered[worker_id] - started)


async def sample_memory(
    workers: dict[str, WorkerProcess], cfg: BenchConfig, samples: dict[str, Samples], *, after: bool
) -> None:
    for i in range(cfg.memory_samples):
        if i:
            await asyncio.sleep(1.0)
        for key in interleaved(list(workers), i):
            mem = await asyncio.to_thread(workers[key].memory)
            if after:
                samples[key].after_rss_mb.append(mem.rss_bytes / MB)
                continue
            samples[key].idle_rss_mb.append(mem.rss_bytes / MB)
            samples[key].idle_pss_mb.append(mem.pss_bytes / MB)
            samples[key].idle_processes.append(mem.processes)
            samples[key].idle_breakdown = list(mem.per_process)


@dataclass(slots=True)
class Subject:
    """A long-lived worker under measurement, with its record file and its warm tree size."""

    worker: WorkerProcess
    entries: EntryLog
    agent: str
    processes: int = 0


async def back_to_idle(subject: Subject, cfg: BenchConfig, timeout_s: float) -> None:
    await subject.worker.wait_idle(
        processes=subject.processes, num_idle=cfg.idle_processes, timeout_s=timeout_s
    )
    await asyncio.sleep(cfg.settle_s)


async def one_dispatch(
    subject: Subject, dispatcher: Dispatcher, cfg: BenchConfig, label: str
) -> tuple[str, float, float]:
    """(room, Unix time just before create_dispatch, the entrypoint's own record of its entry)."""
    token = f"{label}-{uuid.uuid4().hex[:10]}"
    room = f"bench-{token}"
    created_at = time.time()
    await dispatcher.dispatch(subject.agent, room, token)
    found = await subject.entries.wait_for([token], ENTRY_TIMEOUT_S)
    if token not in found:
        raise BenchError(f"{label}: the entrypoint did not run within {ENTRY_TIMEOUT_S}s")
    await back_to_idle(subject, cfg, IDLE_TIMEOUT_S)
    await dispatcher.delete_rooms([room])
    return room, created_at, found[token].entered_at


async def measure_dispatches(
    subjects: dict[str, Subject],
    dispatcher: Dispatcher,
    cfg: BenchConfig,
    samples: dict[str, Samples],
) -> None:
    for i in range(cfg.dispatches):
        for key in interleaved(list(subjects), i):
            room, created_at, entered_at = await one_dispatch(
                subjects[key], dispatcher, cfg, f"{key}-seq{i}"
            )
            samples[key].sequential.append((room, created_at, entered_at))
            samples[key].dispatch_ms.append((entered_at - created_at) * 1000)
        note(
            f"dispatch {i}: "
            + ", ".join(f"{k} {samples[k].dispatch_ms[-1]:.1f}ms" for k in subjects)
        )


async def one_burst(
    subject: Subject, dispatcher: Dispatcher, cfg: BenchConfig, label: str, samples: Samples
) -> None:
    """Create `burst_size` dispatches at once; wall time until every entrypoint ran."""
    tokens = [f"{label}-{n}-{uuid.uuid4().hex[:8]}" for n in range(cfg.burst_size)]
    stop = asyncio.Event()
    peak = asyncio.create_task(peak_rss(subject.worker, stop), name=f"peak-{label}")
    try:
        await burst_and_wait(subject, dispatcher, tokens, label, samples)
    finally:
        stop.set()
        samples.burst_peak_rss_mb.append(await peak / MB)
    await back_to_idle(subject, cfg, BURST_TIMEOUT_S)
    await dispatcher.delete_rooms([f"bench-{t}" for t in tokens])


async def peak_rss(worker: WorkerProcess, stop: asyncio.Event) -> int:
    """Sample the tree's RSS every 0.2 s until `stop` is set; return the highest seen."""
    highest = 0
    while not stop.is_set():
        with contextlib.suppress(psutil.NoSuchProcess):
            highest = max(highest, await asyncio.to_thread(worker.rss_bytes))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return highest


async def burst_and_wait(
    subject: Subject, dispatcher: Dispatcher, tokens: list[str], label: str, samples: Samples
) -> None:
    created_at = time.time()
    results = await asyncio.gather(
        *(dispatcher.dispatch(subject.agent, f"bench-{t}", t) for t in tokens),
        return_exceptions=True,
    )
    created = time.time() - created_at
    failed = [r for r in results if isinstance(r, BaseException)]
    found = await subject.entries.wait_for(tokens, BURST_TIMEOUT_S, BURST_STALL_S)
    samples.burst_ran.append(len(found))
    if failed or len(found) < len(tokens):
        first = f"; first error: {failed[0]!r}" if failed else ""
        samples.problems.append(
            f"{label}: only {len(found)}/{len(tokens)} entrypoints ran (none for "
            f"{BURST_STALL_S:.0f}s after the last), {len(failed)} create_dispatch calls "
            f"failed{first}; see the worker's log for the jobs that failed"
        )
        note(samples.problems[-1])
    else:
        wall = max(e.entered_at for e in found.values()) - created_at
        samples.burst_s.append(wall)
        samples.burst_job_ms.extend((e.entered_at - created_at) * 1000 for e in found.values())
        note(f"{label}: {len(tokens)} created in {created:.2f}s, all running after {wall:.2f}s")


async def start_subjects(
    specs: dict[str, RuntimeSpec], cfg: BenchConfig, logs: Path, stack: list[WorkerProcess]
) -> dict[str, Subject]:
    subjects: dict[str, Subject] = {}
    for key, spec in specs.items():
        worker = WorkerProcess(spec, log_path=logs / f"{key}-main.log")
        stack.append(worker)
        await worker.start()
        await worker.wait_warm(cfg.idle_processes, REGISTER_TIMEOUT_S)
        subjects[key] = Subject(
            worker, EntryLog(Path(spec.env["BENCH_RECORD_FILE"])), agent_name(spec)
        )
    await asyncio.sleep(3.0)  # let both settle after their start-up work
    for subject in subjects.values():
        subject.processes, _ = await asyncio.to_thread(subject.worker.process_count)
    return subjects


async def measure_running(
    specs: dict[str, RuntimeSpec],
    server: LiveKitServer,
    cfg: BenchConfig,
    logs: Path,
    samples: dict[str, Samples],
) -> None:
    """Memory, sequential dispatches and bursts, with both workers running side by side."""
    workers: list[WorkerProcess] = []
    try:
        async with Dispatcher(server.url, server.api_key, server.api_secret) as dispatcher:
            subjects = await start_subjects(specs, cfg, logs, workers)
            note("both workers registered and warm; sampling idle memory")
            await sample_memory(
                {k: s.worker for k, s in subjects.items()}, cfg, samples, after=False
            )
            note(f"{cfg.dispatches} sequential dispatches each")
            await measure_dispatches(subjects, dispatcher, cfg, samples)
            for r in range(cfg.burst_rounds):
                for key in interleaved(list(subjects), r):
                    await one_burst(subjects[key], dispatcher, cfg, f"{key}-burst{r}", samples[key])
            await sample_memory(
                {k: s.worker for k, s in subjects.items()}, cfg, samples, after=True
            )
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
    for w in workers:
        split_latency(w, samples[w.spec.key])
        if w.max_zombies:
            samples[w.spec.key].problems.append(
                f"up to {w.max_zombies} exited job processes left unreaped (zombies) while idle"
            )


def split_latency(worker: WorkerProcess, samples: Samples) -> None:
    """Split each sequential dispatch at the moment the worker logged the server's offer."""
    offers = worker.offers()
    for room, created_at, entered_at in samples.sequential:
        offered_at = offers.get(room)
        if offered_at is None:
            samples.problems.append(f"{room}: no offer found in {worker.log_path}")
            continue
        samples.server_ms.append((offered_at - created_at) * 1000)
        samples.worker_ms.append((entered_at - offered_at) * 1000)
