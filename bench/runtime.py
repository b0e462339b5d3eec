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
import json
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench import phases, provenance, report, venv
from bench.dispatching import Dispatcher
from bench.phases import BURST_STALL_S, BenchConfig, BenchError, Samples, note
from bench.runtimes import (
    BENCH_DIR,
    MissingServer,
    build_specs,
    server_from_env,
    server_registrations,
)
from bench.workers import WorkerFailed, kill_leftovers

RESULTS_DIR = BENCH_DIR / "results"


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
            key="register_server_s",
            title="  the same, as the LiveKit server logged it",
            unit="s",
            ours=ours.register_server_s,
            official=lk.register_server_s,
            target=report.Target(text="<= 0.20x (5x faster)", met=lambda o, k: o * 5 <= k),
            how="Unix time before exec to the server's own 'worker registered' line for that "
            "worker id (the rig's livekit.log, millisecond stamps)",
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
            "the LiveKit server's share, before the worker hears of the job; psrpc waits 200 ms "
            "in it for other nodes' claims (bench/README.md)",
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
            how="every job of every complete burst, from the burst's start (a burst where "
            "jobs failed would leave only the fastest)",
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


async def run(cfg: BenchConfig, *, write: bool) -> int:
    """The whole benchmark; SIGTERM or SIGINT cancel it, and the workers are stopped."""
    this = asyncio.current_task()
    assert this is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, this.cancel)
    server = server_from_env()
    official_python = await asyncio.to_thread(venv.ensure_official_venv)
    started = provenance.utc_now()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-bench-"))
    logs = workdir / "logs"
    logs.mkdir()
    note(f"logs and record files in {workdir}")
    specs = build_specs(server, workdir, official_python, cfg.idle_processes, uuid.uuid4().hex[:6])
    samples = {key: Samples() for key in specs}
    specs = {key: spec for key, spec in specs.items() if key in cfg.runtimes}
    async with Dispatcher(server.url, server.api_key, server.api_secret) as probe:
        await probe.check_server()
    note(f"{cfg.starts} measured starts each (+1 unmeasured)")
    await phases.measure_starts(specs, cfg, logs, samples)
    registered = server_registrations(server.log_path)
    for s in samples.values():
        phases.registration_by_server(s, registered)
    await phases.measure_running(specs, server, cfg, logs, samples)
    metrics = build_metrics(samples, cfg)
    rows = [report.summarize(m) for m in metrics]
    print(report.render_text(rows))
    for key, s in samples.items():
        print(f"idle RSS by process ({key}, MB): {describe_breakdown(s.idle_breakdown)}")
        for problem in s.problems:
            print(f"problem ({key}): {problem}")
    if write:
        command = "make bench  # python -m bench.runtime"
        meta = provenance.describe(started, load_before, command=command, config=cfg) | {
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
    except (BenchError, MissingServer, WorkerFailed, venv.VenvError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted, every worker stopped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()


if __name__ == "__main__":
    sys.exit(main())
