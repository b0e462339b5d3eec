"""`python -m bench.runtime` (`make bench`): this runtime and livekit-agents, side by side.

The same trivial agent (bench/agents/) runs under both runtimes against the same LiveKit server
(LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET; `make bench` exports the rig's), with the same
number of idle processes and the same load settings. Every figure is measured in one run,
interleaving the two runtimes across repetitions (the order flips every repetition), and
reported as medians:

1. process start -> registered: the moment the worker's own "registered" log line is read;
2. dispatch created -> entrypoint running: Unix time just before `create_dispatch` to the
   time.time() the entrypoint records first thing, sequential dispatches into fresh rooms;
3. idle memory: RSS (and PSS, USS) summed over the worker and all its descendants, registered
   with its idle processes warm and no job running;
4. a burst: N dispatches created at once -> all N entrypoints running (wall time).

It prints a table and writes bench/results/<UTC time>.json and bench/results/latest.md. It
asserts nothing. Every process it starts runs in its own process group and is killed on the
way out, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench import report, venv
from bench.dispatching import Dispatcher, EntryLog
from bench.workers import RuntimeSpec, WorkerFailed, WorkerProcess, kill_leftovers

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
MB = 1024 * 1024
REGISTER_TIMEOUT_S = 60.0
ENTRY_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 120.0
BURST_TIMEOUT_S = 300.0
BURST_STALL_S = 30.0
"""A burst ends early when no entrypoint ran for this long (the missing jobs failed)."""
_STRIPPED_ENV = ("AGENT_", "LIVEKIT_", "BENCH_", "PYTHONPATH", "POD_IP")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what is missing or what failed."""


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


@dataclass(frozen=True, slots=True)
class LiveKitServer:
    url: str
    api_key: str
    api_secret: str = field(repr=False)


@dataclass(slots=True)
class Samples:
    """Everything measured for one runtime."""

    register_s: list[float] = field(default_factory=list)
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


def server_from_env() -> LiveKitServer:
    missing = [
        v for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(v)
    ]
    if missing:
        raise BenchError(f"{', '.join(missing)} not set: run `make bench` (it starts the rig)")
    return LiveKitServer(
        os.environ["LIVEKIT_URL"], os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    )


def build_specs(
    server: LiveKitServer, workdir: Path, official_python: Path, cfg: BenchConfig, run_id: str
) -> dict[str, RuntimeSpec]:
    """Both runtimes' commands. Their import path holds only `bench` (a link to this package):
    the repository root on sys.path would shadow the standard library's `operator`."""
    import_root = workdir / "path"
    import_root.mkdir()
    (import_root / "bench").symlink_to(BENCH_DIR, target_is_directory=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV)}
    base |= {
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "PYTHONPATH": str(import_root),
        "PYTHONUNBUFFERED": "1",
    }
    ours = RuntimeSpec(
        key=report.OURS,
        argv=(
            str(Path(sys.executable).with_name("agent-worker")),
            "start",
            "bench.agents.ours:options",
        ),
        env=base
        | {
            "AGENT_NAME": f"bench-ours-{run_id}",
            "AGENT_NUM_IDLE_PROCESSES": str(cfg.idle_processes),
            "AGENT_HOST": "127.0.0.1",
            "BENCH_RECORD_FILE": str(workdir / "ours.entries"),
        },
        port_env="AGENT_PORT",
        cwd=import_root,
        registered_marker="registered with LiveKit",
        reports_idle_processes=True,
        offered_message='"message": "job offered"',
        log_time_key="time",
    )
    official = RuntimeSpec(
        key=report.OFFICIAL,
        argv=(str(official_python), "-m", "bench.agents.official", "start"),
        env=base
        | {
            "BENCH_AGENT_NAME": f"bench-lk-{run_id}",
            "BENCH_NUM_IDLE_PROCESSES": str(cfg.idle_processes),
            "BENCH_RECORD_FILE": str(workdir / "official.entries"),
        },
        port_env="BENCH_PORT",
        cwd=import_root,
        registered_marker="registered worker",
        reports_idle_processes=False,
        offered_message='"message": "received job request"',
        log_time_key="timestamp",
        warm_failure_marker="timed out waiting for idle processes",
    )
    return {ours.key: ours, official.key: official}


def agent_name(spec: RuntimeSpec) -> str:
    return spec.env["AGENT_NAME"] if "AGENT_NAME" in spec.env else spec.env["BENCH_AGENT_NAME"]


def interleaved(keys: Sequence[str], i: int) -> list[str]:
    """Both runtimes, in an order that flips with every repetition."""
    return list(keys) if i % 2 == 0 else list(reversed(keys))


async def measure_starts(
    specs: dict[str, RuntimeSpec], cfg: BenchConfig, logs: Path, samples: dict[str, Samples]
) -> None:
    """Start, register, warm, stop: `cfg.starts` times each, after one unmeasured start."""
    for i in range(cfg.starts + 1):
        for key in interleaved(list(specs), i):
            worker = WorkerProcess(specs[key], log_path=logs / f"{key}-start-{i}.log")
            try:
                await worker.start()
                registered = await worker.wait_registered(REGISTER_TIMEOUT_S)
                warm = await worker.wait_warm(cfg.idle_processes, REGISTER_TIMEOUT_S)
            finally:
                await worker.stop()
            if worker.warm_failed:
                samples[key].problems.append(f"start {i}: registered before its pool was warm")
            if i > 0:
                samples[key].register_s.append(registered)
                samples[key].warm_s.append(warm)
            note(f"start {i} {key}: registered {registered:.3f}s, warm {warm:.3f}s")


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


def build_metrics(samples: dict[str, Samples], cfg: BenchConfig) -> list[report.Metric]:
    ours, lk = samples[report.OURS], samples[report.OFFICIAL]
    return [
        report.Metric(
            key="register_s",
            title="process start -> registered",
            unit="s",
            ours=ours.register_s,
            official=lk.register_s,
            target=report.Target(text="<= 0.20x (5x faster)", met=lambda o, k: o * 5 <= k),
            how="monotonic time from exec to reading the worker's own registration log line",
        ),
        report.Metric(
            key="warm_s",
            title=f"process start -> registered, {cfg.idle_processes} idle processes warm",
            unit="s",
            ours=ours.warm_s,
            official=lk.warm_s,
            how="ours: /worker idle_processes polled every 10 ms after registering; "
            "livekit-agents: its registration (ProcPool.start waits for the warm pool first)",
        ),
        report.Metric(
            key="dispatch_ms",
            title="dispatch created -> entrypoint running",
            unit="ms",
            ours=ours.dispatch_ms,
            official=lk.dispatch_ms,
            target=report.Target(text="<= 1.00x and < 50 ms", met=lambda o, k: o <= k and o < 50.0),
            how="time.time() before create_dispatch to the entrypoint's first time.time(); "
            "sequential, each into a new room, after the worker is idle and warm again",
        ),
        report.Metric(
            key="server_ms",
            title="  of which: dispatch created -> job offered to the worker",
            unit="ms",
            ours=ours.server_ms,
            official=lk.server_ms,
            how="to the time in the worker's own log line for the offer (AvailabilityRequest): "
            "the LiveKit server's share, before the worker hears of the job",
        ),
        report.Metric(
            key="worker_ms",
            title="  of which: job offered -> entrypoint running",
            unit="ms",
            ours=ours.worker_ms,
            official=lk.worker_ms,
            target=report.Target(text="<= 1.00x and < 50 ms", met=lambda o, k: o <= k and o < 50.0),
            how="from the worker's log line for the offer to the entrypoint's record: the "
            "runtime's share (answer, assignment, hand-over to a warm process)",
        ),
        report.Metric(
            key="idle_rss_mb",
            title="idle memory, RSS of the process tree",
            unit="MB",
            ours=ours.idle_rss_mb,
            official=lk.idle_rss_mb,
            target=report.Target(text="<= 0.33x", met=lambda o, k: o * 3 <= k),
            how="psutil RSS summed over the worker and all descendants, registered, pool warm",
        ),
        report.Metric(
            key="idle_pss_mb",
            title="idle memory, PSS of the process tree",
            unit="MB",
            ours=ours.idle_pss_mb,
            official=lk.idle_pss_mb,
            how="as RSS, with pages shared between processes divided among them",
        ),
        report.Metric(
            key="burst_s",
            title=f"{cfg.burst_size} dispatches at once -> all running",
            unit="s",
            ours=ours.burst_s,
            official=lk.burst_s,
            how="time.time() before the first create_dispatch to the last entrypoint's record",
        ),
        report.Metric(
            key="burst_ran",
            title=f"burst: entrypoints that ran, of {cfg.burst_size}",
            unit="jobs",
            ours=ours.burst_ran,
            official=lk.burst_ran,
            target=report.Target(
                text=f"all {cfg.burst_size}", met=lambda o, k: o >= cfg.burst_size
            ),
            how=f"a burst ends when all ran or none ran for {BURST_STALL_S:.0f}s; "
            "the wall time above counts complete bursts only",
            worst=True,
        ),
        report.Metric(
            key="burst_job_ms",
            title="burst: dispatch -> entrypoint, per job",
            unit="ms",
            ours=ours.burst_job_ms,
            official=lk.burst_job_ms,
            how="every job of every burst, from the burst's start",
        ),
        report.Metric(
            key="burst_peak_rss_mb",
            title="burst: peak RSS of the process tree",
            unit="MB",
            ours=ours.burst_peak_rss_mb,
            official=lk.burst_peak_rss_mb,
            how="RSS summed over the tree every 0.2 s during each burst, the highest",
        ),
        report.Metric(
            key="after_rss_mb",
            title="idle memory after all dispatches, RSS",
            unit="MB",
            ours=ours.after_rss_mb,
            official=lk.after_rss_mb,
            how="as idle RSS, sampled again once the bursts are over",
        ),
    ]


def describe_breakdown(breakdown: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{role} {mb:.1f}" for role, mb in breakdown) or "n/a"


def write_results(
    metrics: list[report.Metric],
    rows: list[report.Row],
    meta: dict[str, object],
    samples: dict[str, Samples],
    stamp: str,
) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    body = {
        **meta,
        "metrics": {m.key: report.to_json(m, r) for m, r in zip(metrics, rows, strict=True)},
        "problems": {k: s.problems for k, s in samples.items()},
        "idle_rss_by_process_mb": {k: s.idle_breakdown for k, s in samples.items()},
    }
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(body, indent=2) + "\n")
    problems = [f"- {k}: {p}" for k, s in samples.items() for p in s.problems]
    md = [
        f"# Runtime benchmark, {meta['finished_at']}",
        "",
        f"`make bench` (python -m bench.runtime); raw samples in `{path.name}`.",
        f"Config: {json.dumps(meta['config'])}. Host: {json.dumps(meta['host'])}.",
        "",
        report.render_markdown(rows),
        "",
        *(f"- {m.title.strip()}: {m.how}" for m in metrics),
        "",
        "Idle RSS by process (MB), last sample:",
        *(f"- {k}: {describe_breakdown(s.idle_breakdown)}" for k, s in samples.items()),
        *(["", "Problems:", *problems] if problems else []),
    ]
    (RESULTS_DIR / "latest.md").write_text("\n".join(md) + "\n")
    return path


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def run(cfg: BenchConfig, *, write: bool) -> int:
    """The whole benchmark; SIGTERM or SIGINT cancel it, and the workers are stopped."""
    this = asyncio.current_task()
    assert this is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, this.cancel)
    server = server_from_env()
    official_python = await asyncio.to_thread(venv.ensure_official_venv)
    started = utc_now()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-bench-"))
    logs = workdir / "logs"
    logs.mkdir()
    note(f"logs and record files in {workdir}")
    specs = build_specs(server, workdir, official_python, cfg, uuid.uuid4().hex[:6])
    samples = {key: Samples() for key in specs}
    specs = {key: spec for key, spec in specs.items() if key in cfg.runtimes}
    async with Dispatcher(server.url, server.api_key, server.api_secret) as probe:
        await probe.check_server()
    note(f"{cfg.starts} measured starts each (+1 unmeasured)")
    await measure_starts(specs, cfg, logs, samples)
    await measure_running(specs, server, cfg, logs, samples)
    metrics = build_metrics(samples, cfg)
    rows = [report.summarize(m) for m in metrics]
    print(report.render_text(rows))
    for key, s in samples.items():
        print(f"idle RSS by process ({key}, MB): {describe_breakdown(s.idle_breakdown)}")
        for problem in s.problems:
            print(f"problem ({key}): {problem}")
    if write:
        meta: dict[str, object] = {
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": utc_now().isoformat(timespec="seconds"),
            "command": "make bench  # python -m bench.runtime " + " ".join(sys.argv[1:]),
            "config": asdict(cfg),
            "host": {
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
            },
            "versions": {report.OURS: _our_version(), report.OFFICIAL: venv.AGENTS_VERSION},
            "server": server.url,
            "logs": str(workdir),
        }
        path = write_results(metrics, rows, meta, samples, started.strftime("%Y%m%dT%H%M%SZ"))
        note(f"results written to {path} and {RESULTS_DIR / 'latest.md'}")
    return 0


def _our_version() -> str:
    from worker_runtime import __version__

    return __version__


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, bool]:
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__.split("\n")[0])
    p.add_argument("--starts", type=int, default=d.starts, help="measured starts per runtime")
    p.add_argument("--dispatches", type=int, default=d.dispatches, help="sequential dispatches")
    p.add_argument("--burst-size", type=int, default=d.burst_size)
    p.add_argument("--burst-rounds", type=int, default=d.burst_rounds)
    p.add_argument("--idle-processes", type=int, default=d.idle_processes)
    p.add_argument("--no-write", action="store_true", help="print the table, write no files")
    p.add_argument(
        "--only", choices=d.runtimes, help="run one runtime alone (for developing the harness)"
    )
    a = p.parse_args(argv)
    cfg = BenchConfig(
        starts=a.starts,
        dispatches=a.dispatches,
        burst_size=a.burst_size,
        burst_rounds=a.burst_rounds,
        idle_processes=a.idle_processes,
        runtimes=(a.only,) if a.only else d.runtimes,
    )
    return cfg, not a.no_write


def main(argv: Sequence[str] | None = None) -> int:
    cfg, write = parse_args(argv)
    try:
        return asyncio.run(run(cfg, write=write))
    except (BenchError, WorkerFailed, venv.VenvError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted, every worker stopped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()


if __name__ == "__main__":
    sys.exit(main())
