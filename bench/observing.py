"""`python -m bench.observing`: the operator's CPU and memory while it observes 1,000 workers.

The real `agent-operator` process runs against the rig's API server (KUBECONFIG; `set -a; .
.rig/env; set +a` exports the rig's) and watches one namespace holding 10 AgentWorkers and 100
worker pods each. The workers are lightweight loopback HTTP endpoints, not worker runtimes: one
process (`bench.fake_workers`) answers GET /worker on 1,000 addresses with documents of this
runtime's shape, mostly idle, some with calls, a few changing, 1% broken (`bench.fake_fleet`).
The pods are API objects bound to a phantom node that no kubelet runs (`bench.phantom`). The
operator reaches the API server through a counting proxy (`bench.api_proxy`).

Order: make the objects, start the fake workers and the operator, wait until every
AgentWorker's status counts what the fake workers answer and every worker was read, let it
settle, then sample once a second for the window: the operator's CPU time and RSS (psutil), the
fake workers' request count, the operator's /metrics, the proxy's counts. It prints a table and
writes bench/results/observing-<UTC time>.json and bench/results/observing-latest.md, asserts
nothing, and removes everything it made on the way out, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from agentworker_operator import kube
from bench import fake_fleet, phantom, provenance
from bench import observing_processes as processes
from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.fake_fleet import FleetShape
from bench.provenance import utc_now
from bench.workers import free_port

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
STATUS_LAG_S = 15.0
"""How far back the answers an AgentWorker's status counts may date (a round, and its write)."""
VERIFY_POLL_S = 2.0


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservingConfig:
    """How big the fleet is and how long to look."""

    agentworkers: int = 10
    workers_per_agentworker: int = 100
    sync_period_s: float = 5.0
    """The operator's --sync-period."""
    settle_s: float = 30.0
    """Seconds between the statuses first matching and the window."""
    window_s: float = 90.0
    """Seconds measured."""
    sample_s: float = 1.0
    change_period_s: float = 60.0
    """Seconds between two draws of a changing worker's calls (5% of the workers)."""
    verify_timeout_s: float = 180.0
    """Bound of the wait for the statuses to match the fake workers' answers."""

    @property
    def shape(self) -> FleetShape:
        return FleetShape(
            agentworkers=self.agentworkers,
            workers_per_agentworker=self.workers_per_agentworker,
            change_period_s=self.change_period_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one run saw."""

    samples: list[report.Sample]
    window: tuple[datetime.datetime, datetime.datetime]
    problems: list[str]


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def status_mismatches(client: kube.Kube, shape: FleetShape) -> list[str]:
    """AgentWorkers whose status counts no answers the fake workers gave in the last seconds."""
    now = time.time()
    moments = [now - lag for lag in range(round(STATUS_LAG_S) + 1)]
    wrong = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        body = await client.get(kube.agentworker_path(phantom.NAMESPACE, name)) or {}
        seen = fake_fleet.counts_of(body.get("status") or {})
        expected = [fake_fleet.expected_counts(shape, aw, t) for t in moments]
        if seen not in expected:
            wrong.append(f"{name}: status {seen}, fake workers {expected[0]}")
    return wrong


async def verify(
    cfg: ObservingConfig, client: kube.Kube, probes: processes.Probes, operator: processes.Child
) -> None:
    """Wait (bounded) until every status matches the answers and every worker was read."""
    deadline = time.monotonic() + cfg.verify_timeout_s
    wrong: list[str] = ["no status read yet"]
    unread = cfg.shape.workers
    while time.monotonic() < deadline:
        operator.check()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            wrong = await status_mismatches(client, cfg.shape)
            per_worker = (await probes.stats()).get("per_worker")
            unread = sum(1 for n in per_worker if not n) if isinstance(per_worker, list) else -1
            if not wrong and unread == 0:
                return
        await asyncio.sleep(VERIFY_POLL_S)
    raise BenchError(
        f"after {cfg.verify_timeout_s:.0f}s: {unread} workers never read; statuses that do not "
        "match the fake workers:\n" + "\n".join(wrong)
    )


async def measure(
    cfg: ObservingConfig,
    probes: processes.Probes,
    operator: processes.Child,
    fakes: processes.Child,
    proxy: ApiProxy,
) -> list[report.Sample]:
    """One sample every `sample_s` for `window_s`, on a fixed schedule."""
    op, fk = psutil.Process(operator.pid), psutil.Process(fakes.pid)
    samples = [await processes.sample(probes, op, fk, proxy)]
    start = samples[0].t_s
    for i in range(1, round(cfg.window_s / cfg.sample_s) + 1):
        await asyncio.sleep(max(0.0, start + i * cfg.sample_s - time.monotonic()))
        operator.check()
        fakes.check()
        samples.append(await processes.sample(probes, op, fk, proxy))
    return samples


def operator_log_problems(path: Path) -> list[str]:
    """The operator's WARNING and ERROR lines (it runs at --log-level=WARNING), first ten."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [f"operator log: {line[:300]}" for line in lines[:10]] + (
        [f"operator log: ... {len(lines) - 10} more lines"] if len(lines) > 10 else []
    )


async def observe(
    cfg: ObservingConfig,
    stack: contextlib.AsyncExitStack,
    workdir: Path,
    profile: Path | None,
) -> Outcome:
    """Make the objects, start everything, verify, settle, measure; `stack` undoes it all."""
    livekit_url, credentials = credentials_from_env()
    shape = cfg.shape
    problems = [p for p in [await asyncio.to_thread(phantom.apply_crd)] if p]
    client = kube.Kube.connect()
    stack.push_async_callback(client.aclose)
    stack.push_async_callback(phantom.delete, client)  # also when create fails half-way
    note(f"making {shape.agentworkers} AgentWorkers and {shape.workers} pods")
    uids = await phantom.create(client, shape, livekit_url, credentials)
    heartbeat = asyncio.create_task(phantom.heartbeat(client, since=utc_now()), name="node")
    stack.push_async_callback(_cancel, heartbeat)
    fakes, stats_port = await processes.start_fake_workers(shape, workdir)
    stack.push_async_callback(fakes.stop)
    proxy = ApiProxy(workdir)
    stack.push_async_callback(proxy.aclose)
    await proxy.start(phantom.NAMESPACE)
    metrics_port = free_port()
    operator = processes.Child(
        name="agent-operator",
        argv=processes.operator_argv(
            namespace=phantom.NAMESPACE,
            sync_period_s=cfg.sync_period_s,
            metrics_port=metrics_port,
            profile=profile,
        ),
        log_path=workdir / "operator.log",
        env={**os.environ, "KUBECONFIG": str(proxy.kubeconfig)},
    )
    stack.push_async_callback(operator.stop)
    await operator.start()
    http = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
    probes = processes.Probes(http, metrics_port=metrics_port, stats_port=stats_port)
    note("operator started; waiting until every status counts what the workers answer")
    await verify(cfg, client, probes, operator)
    note(f"statuses match; settling {cfg.settle_s:.0f}s, then measuring {cfg.window_s:.0f}s")
    await asyncio.sleep(cfg.settle_s)
    operator.check()
    window_start = utc_now()
    samples = await measure(cfg, probes, operator, fakes, proxy)
    window = (window_start, utc_now())
    problems += await phantom.pods_report(client, uids)
    problems += [f"after the window: {m}" for m in await status_mismatches(client, shape)]
    problems += operator_log_problems(operator.log_path)
    return Outcome(samples=samples, window=window, problems=problems)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def fleet_mix(shape: FleetShape) -> dict[str, int]:
    """How many fake workers of each kind."""
    mix: dict[str, int] = {}
    for index in range(shape.workers):
        kind = fake_fleet.kind(shape, index).value
        mix[kind] = mix.get(kind, 0) + 1
    return dict(sorted(mix.items()))


def source_version() -> dict[str, object]:
    """The commit measured, and whether operator/ had uncommitted changes."""
    repo = RESULTS_DIR.parent.parent

    def git(*args: str) -> str:
        argv = ["git", "-C", str(repo), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "operator_changed": bool(git("status", "--porcelain", "operator")),
    }


def credentials_from_env() -> tuple[str, phantom.Credentials]:
    needed = ("KUBECONFIG", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    missing = [v for v in needed if not os.environ.get(v)]
    if missing:
        raise BenchError(f"{', '.join(missing)} not set: `set -a; . .rig/env; set +a` first")
    credentials = phantom.Credentials(
        api_key=os.environ["LIVEKIT_API_KEY"], api_secret=os.environ["LIVEKIT_API_SECRET"]
    )
    return os.environ["LIVEKIT_URL"], credentials


def build_meta(
    cfg: ObservingConfig,
    outcome: Outcome,
    *,
    started: datetime.datetime,
    load_before: Sequence[float],
    workdir: Path,
) -> dict[str, object]:
    command = "python -m bench.observing"
    return provenance.describe(started, load_before, command=command, config=cfg) | {
        "window": [t.isoformat(timespec="seconds") for t in outcome.window],
        "workers": cfg.shape.workers,
        "fleet": fleet_mix(cfg.shape),
        "source": source_version(),
        "verified_before_window": "every AgentWorker's status counted what the fake workers "
        "answered, and every fake worker was read",
        "pods_intact_after_window": not any(p.startswith("pod ") for p in outcome.problems),
        "problems": outcome.problems,
        "logs": str(workdir),
    }


def write_results(
    meta: dict[str, object],
    outcome: Outcome,
    figures: report.Figures,
    table: list[report.Row],
    stamp: str,
) -> Path:
    """bench/results/observing-<stamp>.json (everything) and observing-latest.md (the table)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"observing-{stamp}.json"
    body = {**meta, "figures": report.to_json(figures, table)}
    path.write_text(json.dumps(body, indent=2) + "\n")
    problems, config, source = outcome.problems, meta["config"], meta["source"]
    assert isinstance(config, dict)
    assert isinstance(source, dict)
    md = [
        f"# Operator observing benchmark, {meta['finished_at']}",
        "",
        f"`{str(meta['command']).strip()}` at commit {str(source['commit'])[:12]}"
        f"{' (operator/ changed)' if source['operator_changed'] else ''}; every sample in "
        f"`{path.name}`.",
        "",
        f"The real `agent-operator` process observing {meta['workers']:,} workers "
        f"({config['agentworkers']} AgentWorkers) every {config['sync_period_s']:g} s, "
        f"measured for {config['window_s']:g} s. **The workers are lightweight loopback HTTP "
        "endpoints serving recorded /worker documents** (one process, bench/fake_workers.py, "
        "documents built with worker_runtime.http_api.worker_document), not worker runtimes; "
        "their pods are API objects bound to a phantom node no kubelet runs (bench/phantom.py). "
        "The operator reaches the API server through a counting proxy (bench/api_proxy.py).",
        "",
        f"Fleet: {json.dumps(meta['fleet'])}.",
        f"Config: {json.dumps(config)}. Host: {json.dumps(meta['host'])}.",
        "",
        report.render_markdown(table),
        "",
        *(f"- {r.title.strip()}: {r.how}" for r in table if r.how),
        "",
        "API requests of the operator in the window, and the watch events it received:",
        "",
        report.render_api_markdown(figures),
        *(["", "Problems:", *(f"- {p}" for p in problems)] if problems else []),
    ]
    (RESULTS_DIR / "observing-latest.md").write_text("\n".join(md) + "\n")
    return path


async def run(cfg: ObservingConfig, *, write: bool, profile: Path | None = None) -> int:
    """The whole benchmark; SIGTERM or SIGINT cancel it, and everything made is removed."""
    this = asyncio.current_task()
    assert this is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, this.cancel)
    started, load_before = utc_now(), os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-bench-observing-"))
    note(f"logs in {workdir}")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(note, "cleaned up")
        outcome = await observe(cfg, stack, workdir, profile)
        note("cleaning up")
    figures = report.figures(outcome.samples, sync_period_s=cfg.sync_period_s)
    table = report.rows(figures, workers=cfg.shape.workers, sync_period_s=cfg.sync_period_s)
    print(report.render_text(table))
    print(report.render_api_markdown(figures))
    for problem in outcome.problems:
        print(f"problem: {problem}")
    if write:
        meta = build_meta(cfg, outcome, started=started, load_before=load_before, workdir=workdir)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = write_results(meta, outcome, figures, table, stamp)
        note(f"results written to {path} and {RESULTS_DIR / 'observing-latest.md'}")
    return 0


def parse_args(argv: Sequence[str] | None) -> tuple[ObservingConfig, bool, Path | None]:
    d = ObservingConfig()
    p = argparse.ArgumentParser(
        prog="python -m bench.observing", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--window", type=float, default=d.window_s, help="seconds measured")
    p.add_argument("--settle", type=float, default=d.settle_s, help="seconds before the window")
    p.add_argument("--agentworkers", type=int, default=d.agentworkers)
    p.add_argument("--workers-per-agentworker", type=int, default=d.workers_per_agentworker)
    p.add_argument("--sync-period", type=float, default=d.sync_period_s)
    p.add_argument("--no-write", action="store_true", help="print the table, write no files")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run the operator under cProfile, its stats to FILE (a diagnosis: the figures of "
        "such a run include the profiler's cost, and no results file is written)",
    )
    a = p.parse_args(argv)
    cfg = ObservingConfig(
        agentworkers=a.agentworkers,
        workers_per_agentworker=a.workers_per_agentworker,
        sync_period_s=a.sync_period,
        settle_s=a.settle,
        window_s=a.window,
    )
    profile = a.profile.resolve() if a.profile else None
    return cfg, not a.no_write and profile is None, profile


def main(argv: Sequence[str] | None = None) -> int:
    cfg, write, profile = parse_args(argv)
    try:
        return asyncio.run(run(cfg, write=write, profile=profile))
    except (BenchError, processes.ChildFailed, phantom.SetupError, kube.KubeError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted, everything made was removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
