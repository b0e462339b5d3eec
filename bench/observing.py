"""`python -m bench.observing`: the operator's CPU and memory while it observes 1,000 workers.

The real `agent-operator` process runs against the rig's API server (KUBECONFIG; `set -a; .
.rig/env; set +a` exports the rig's) and watches one namespace holding 10 AgentWorkers of 100
replicas each (`--agentworkers`, `--workers-per-agentworker`: up to 10,000 workers). The
workers are lightweight loopback HTTP endpoints, not worker runtimes: one process
(`bench.fake_workers`) answers GET /worker on 1,000 addresses with documents of this runtime's
shape, mostly idle, some with calls, a few changing, 1% broken (`bench.fake_fleet`).
The pods are the Deployments' own, made by the rig's controller-manager and bound by its
scheduler to a phantom node that no kubelet runs (`bench.phantom`); the benchmark writes their
status as a kubelet would, each pod's IP a fake worker's address (`bench.phantom_kubelet`). The
operator reaches the API server through a counting proxy (`bench.api_proxy`).

By default two sides, one after the other (`bench.observing_sides`): the operator as it
ships, which long-polls each worker's /worker for changes besides its periodic rounds, and the
same with `--no-worker-watch`; `--sides` chooses others (`bench.observing_layout`), such as one
process against 2 or 4 shards (processes started at once with `--shards N`). Order: make the
objects, start the fake workers, run an operator (not measured) until its Deployments' pods all
run, then for each side start its operator processes, wait until each holds its own shard,
every AgentWorker's status counts what the fake workers answer and every worker was read, let
them settle, sample once a second for the window (each process's CPU time, RSS and open files
(psutil) and /metrics, the fake workers' counts of plain reads and long polls, the proxy's
counts), and stop them. It prints the sides' table and writes bench/results/<name>-<UTC
time>.json and bench/results/<name>-latest.md (`--name`, default observing), asserts nothing
(an operator that lists the pods again in a window, or pods replaced, are problems in the
report), and removes everything it made on the way out, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agentworker_operator import kube
from bench import (
    observing_layout,
    observing_results,
    observing_rows,
    observing_sides,
    observing_tables,
    phantom,
    phantom_kubelet,
)
from bench import observing_processes as processes
from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.observing_sides import BenchError, ObservingConfig, note
from bench.provenance import utc_now

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
CLEAN_UP_ERRORS = (
    phantom.SetupError,
    kube.KubeError,
    processes.ChildFailed,
    TimeoutError,
    aiohttp.ClientError,
)
"""What a clean-up may fail with (the namespace of thousands of pods slow to go, the API
server busy)."""


async def observe(
    cfg: ObservingConfig,
    stack: contextlib.AsyncExitStack,
    workdir: Path,
    profile: Path | None,
) -> observing_results.Outcome:
    """Make the objects, start the fake workers, have the Deployments' pods made and started,
    then each side in turn; `stack` undoes it all."""
    livekit_url, credentials = credentials_from_env()
    shape = cfg.shape
    problems = [p for p in [await asyncio.to_thread(phantom.apply_crd)] if p]
    client = kube.Kube.connect()
    stack.push_async_callback(client.aclose)
    bound_s = cfg.scaled(phantom.WAIT_S)
    # also when create fails half-way
    stack.push_async_callback(functools.partial(phantom.delete, client, timeout_s=bound_s))
    note(f"making {shape.agentworkers} AgentWorkers of {shape.workers_per_agentworker} replicas")
    await phantom.create(client, shape, livekit_url, credentials, timeout_s=bound_s)
    heartbeat = asyncio.create_task(phantom.heartbeat(client, since=utc_now()), name="node")
    stack.push_async_callback(_cancel, heartbeat)
    fakes, stats_port = await processes.start_fake_workers(shape, workdir)
    stack.push_async_callback(fakes.stop)
    proxy = ApiProxy(workdir)
    stack.push_async_callback(proxy.aclose)
    await proxy.start(phantom.NAMESPACE)
    http = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
    shared = observing_sides.Shared(
        cfg=cfg,
        client=client,
        http=http,
        fakes=fakes,
        stats_port=stats_port,
        proxy=proxy,
        workdir=workdir,
        profile=profile,
    )
    placed = await observing_sides.make_pods(shared)
    names = phantom_kubelet.names(placed)
    outcomes = [await observing_sides.run_side(shared, _side(cfg, key), names) for key in cfg.sides]
    problems += await phantom.pods_report(client, phantom_kubelet.uids(placed))
    return observing_results.Outcome(sides=outcomes, problems=problems)


def _side(cfg: ObservingConfig, key: str) -> observing_layout.Side:
    return observing_layout.side(key, workers=cfg.shape.workers)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def credentials_from_env() -> tuple[str, phantom.Credentials]:
    needed = ("KUBECONFIG", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    missing = [v for v in needed if not os.environ.get(v)]
    if missing:
        raise BenchError(f"{', '.join(missing)} not set: `set -a; . .rig/env; set +a` first")
    credentials = phantom.Credentials(
        api_key=os.environ["LIVEKIT_API_KEY"], api_secret=os.environ["LIVEKIT_API_SECRET"]
    )
    return os.environ["LIVEKIT_URL"], credentials


def side_table(
    cfg: ObservingConfig, outcome: observing_sides.SideOutcome, *, fd_limit: int
) -> observing_tables.SideTable:
    figures = report.figures(outcome.samples, sync_period_s=cfg.sync_period_s)
    setting = observing_rows.Setting(
        workers=cfg.shape.workers,
        workers_per_agentworker=cfg.workers_per_agentworker,
        streaming=observing_results.streaming(cfg.shape),
        sync_period_s=cfg.sync_period_s,
        fd_limit=fd_limit,
    )
    return observing_tables.SideTable(
        title=outcome.side.title,
        figures=figures,
        rows=observing_rows.rows(figures, outcome.roles, setting),
        roles=outcome.roles,
    )


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (the fake worker server
    and the operators inherit it: each worker is a listening socket, a kept-alive connection
    and a held poll); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


async def run(
    cfg: ObservingConfig, *, write: bool, name: str = "observing", profile: Path | None = None
) -> int:
    """The whole benchmark; SIGTERM or SIGINT cancel it, and everything made is removed.
    `name`: the results files' (`<name>-<time>.json`, `<name>-latest.md`)."""
    this = asyncio.current_task()
    assert this is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, this.cancel)
    started, load_before = utc_now(), os.getloadavg()
    fd_limit = raise_open_files_limit()
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-bench-observing-"))
    note(f"logs in {workdir}")
    outcome: observing_results.Outcome | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(note, "cleaned up")
            outcome = await observe(cfg, stack, workdir, profile)
            note("cleaning up")
    except CLEAN_UP_ERRORS as error:
        if outcome is None:
            raise
        # every side was measured: a clean-up that did not finish is a problem of the run
        # (said in the results), not a reason to lose them
        found = f"clean-up did not finish: {error}"
        note(found)
        outcome = dataclasses.replace(outcome, problems=[*outcome.problems, found])
    tables = [side_table(cfg, side, fd_limit=fd_limit) for side in outcome.sides]
    print(observing_tables.render_text(tables))
    print("\n".join(observing_tables.render_ratios(tables)))
    print(observing_tables.render_api_markdown(tables))
    for problem in [*outcome.problems, *(p for side in outcome.sides for p in side.problems)]:
        print(f"problem: {problem}")
    if write:
        meta = observing_results.build_meta(
            cfg, outcome, started=started, load_before=load_before, workdir=workdir
        )
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = observing_results.write_results(cfg, meta, tables, stamp, name=name)
        latest = observing_results.RESULTS_DIR / f"{name}-latest.md"
        note(f"results written to {path} and {latest}")
    return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """What the command line asks for."""

    cfg: ObservingConfig
    write: bool
    """Write the results files (not with --no-write or --profile)."""
    name: str
    """The results files' name: bench/results/<name>-<time>.json and <name>-latest.md."""
    profile: Path | None


def side_key(key: str) -> str:
    """argparse's check of a side's key (`observing_layout.side` says what is wrong)."""
    try:
        observing_layout.side(key, workers=0)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return key


def parse_args(argv: Sequence[str] | None) -> Invocation:
    d = ObservingConfig()
    p = argparse.ArgumentParser(
        prog="python -m bench.observing", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--window", type=float, default=d.window_s, help="seconds measured a side")
    p.add_argument(
        "--settle", type=float, default=d.settle_s, help="seconds before the window, a side"
    )
    p.add_argument("--agentworkers", type=int, default=d.agentworkers)
    p.add_argument("--workers-per-agentworker", type=int, default=d.workers_per_agentworker)
    p.add_argument("--sync-period", type=float, default=d.sync_period_s)
    p.add_argument(
        "--status-lag",
        type=float,
        default=d.status_lag_s,
        metavar="SECONDS",
        help="how old the answers a status counts may be (raise it when rounds outlast the "
        f"sync period; default {d.status_lag_s:g})",
    )
    p.add_argument(
        "--verify-timeout",
        type=float,
        default=d.verify_timeout_s,
        metavar="SECONDS",
        help="bound of the wait, on each side, for the statuses to match the answers",
    )
    p.add_argument(
        "--sides",
        nargs="+",
        type=side_key,
        metavar="SIDE",
        help="run these sides, in this order: watch (long polls, as shipped), no-watch "
        "(--no-worker-watch), one (one process, titled for a comparison with shards), "
        "shards-N (N processes at once with --shards N, N from 2 to "
        f"{observing_layout.MAX_SHARDS}); default: {' '.join(d.sides)}",
    )
    p.add_argument(
        "--side", action="append", type=side_key, help="one side more (repeatable), after --sides"
    )
    p.add_argument(
        "--name",
        default="observing",
        help="the results files' name: bench/results/NAME-<time>.json and NAME-latest.md "
        "(default observing)",
    )
    p.add_argument("--no-write", action="store_true", help="print the table, write no files")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run the operator under cProfile, its stats to FILE with the process before the "
        "suffix (FILE-watch.prof, FILE-shards-2-0.prof ...; a diagnosis: the figures of such a "
        "run include the profiler's cost, and no results file is written)",
    )
    a = p.parse_args(argv)
    if a.agentworkers * a.workers_per_agentworker > phantom.NODE_PODS:
        p.error(f"at most {phantom.NODE_PODS:,} workers (the phantom node's room for pods)")
    chosen = [*(a.sides or []), *(a.side or [])]
    cfg = ObservingConfig(
        agentworkers=a.agentworkers,
        workers_per_agentworker=a.workers_per_agentworker,
        sync_period_s=a.sync_period,
        settle_s=a.settle,
        window_s=a.window,
        verify_timeout_s=a.verify_timeout,
        status_lag_s=a.status_lag,
        sides=tuple(dict.fromkeys(chosen)) if chosen else d.sides,
    )
    profile = a.profile.resolve() if a.profile else None
    return Invocation(
        cfg=cfg, write=not a.no_write and profile is None, name=a.name, profile=profile
    )


def main(argv: Sequence[str] | None = None) -> int:
    asked = parse_args(argv)
    try:
        return asyncio.run(
            run(asked.cfg, write=asked.write, name=asked.name, profile=asked.profile)
        )
    except (BenchError, processes.ChildFailed, phantom.SetupError, kube.KubeError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted, everything made was removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
