"""`python -m bench.observing`: the operator's CPU and memory while it observes 1,000 workers.

The real `agent-operator` process runs against the rig's API server (KUBECONFIG; `set -a; .
.rig/env; set +a` exports the rig's) and watches one namespace holding 10 AgentWorkers of 100
replicas each. The workers are lightweight loopback HTTP endpoints, not worker runtimes: one
process (`bench.fake_workers`) answers GET /worker on 1,000 addresses with documents of this
runtime's shape, mostly idle, some with calls, a few changing, 1% broken (`bench.fake_fleet`).
The pods are the Deployments' own, made by the rig's controller-manager and bound by its
scheduler to a phantom node that no kubelet runs (`bench.phantom`); the benchmark writes their
status as a kubelet would, each pod's IP a fake worker's address (`bench.phantom_kubelet`). The
operator reaches the API server through a counting proxy (`bench.api_proxy`).

Two sides, one after the other (`bench.observing_sides`): the operator as it ships, which
long-polls each worker's /worker for changes besides its periodic rounds, and the same with
`--no-worker-watch`. Order: make the objects, start the fake workers, run an operator (not
measured) until its Deployments' pods all run, then for each side start its operator, wait
until every AgentWorker's status counts what the fake workers answer and every worker was read,
let it settle, sample once a second for the window (the operator's CPU time and RSS (psutil),
the fake workers' counts of plain reads and long polls, the operator's /metrics, the proxy's
counts), and stop it. It prints the sides' table and writes bench/results/observing-<UTC
time>.json and bench/results/observing-latest.md, asserts nothing (an operator that lists the
pods again in a window, or pods replaced, are problems in the report), and removes everything it
made on the way out, also on error or Ctrl-C.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agentworker_operator import kube
from bench import (
    fake_fleet,
    observing_sides,
    observing_tables,
    phantom,
    phantom_kubelet,
    provenance,
)
from bench import observing_processes as processes
from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.fake_fleet import FleetShape
from bench.observing_sides import BenchError, ObservingConfig, note
from bench.provenance import utc_now

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one run saw: each side's, and the problems of the objects shared by the sides."""

    sides: list[observing_sides.SideOutcome]
    problems: list[str]


async def observe(
    cfg: ObservingConfig,
    stack: contextlib.AsyncExitStack,
    workdir: Path,
    profile: Path | None,
) -> Outcome:
    """Make the objects, start the fake workers, have the Deployments' pods made and started,
    then each side in turn; `stack` undoes it all."""
    livekit_url, credentials = credentials_from_env()
    shape = cfg.shape
    problems = [p for p in [await asyncio.to_thread(phantom.apply_crd)] if p]
    client = kube.Kube.connect()
    stack.push_async_callback(client.aclose)
    stack.push_async_callback(phantom.delete, client)  # also when create fails half-way
    note(f"making {shape.agentworkers} AgentWorkers of {shape.workers_per_agentworker} replicas")
    await phantom.create(client, shape, livekit_url, credentials)
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
    outcomes = [
        await observing_sides.run_side(shared, observing_sides.SIDES[key], names)
        for key in cfg.sides
    ]
    problems += await phantom.pods_report(client, phantom_kubelet.uids(placed))
    return Outcome(sides=outcomes, problems=problems)


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


def describe_sides(cfg: ObservingConfig) -> list[str]:
    """What the sides share, how they differ, and what favours either."""
    order = ", then ".join(f"`{observing_sides.SIDES[key].title}`" for key in cfg.sides)
    return [
        f"Sides, one after the other in this order: {order}. Each is its own operator process "
        "(the only difference: `--no-worker-watch` on the second column's) over the same "
        "objects, the same fake worker server and the same proxy. Before each side the worker "
        "counts of every status are blanked, so its own operator must write them again before "
        "its window (checked, with every worker read since the side began).",
        "What favours `--no-worker-watch`: the operator with long polls does everything the "
        "other does, the periodic rounds reading every worker (the load moves no generation), "
        "and besides holds one connection and one task per streaming worker, parses every poll "
        "answer (each poll's wait runs out after 25 s with nothing new; the polls began "
        "together, so they end in bursts: see the CPU per period), and runs a round of one "
        "fleet for each change it hears. The fake worker server also answers those polls, on "
        "the same 2 cores.",
        "What favours the long polls: what they buy is time, not CPU. A worker's change "
        "reaches the autoscaler without waiting for a periodic round (the row 'a change "
        "heard -> decision' says how soon), where without them it waits for the next "
        "periodic round, up to "
        f"{cfg.sync_period_s:g} s; the rounds a change starts read no worker.",
        "Order: the later side finds the API server, the proxy and the fake worker server "
        "warm. Neither side makes the Deployments, PDBs and Services nor waits for pods: an "
        "operator that is not measured made them before the first side and ran until every "
        "pod ran (each side's operator applies them unchanged). The official worker and the "
        "faults serve no change stream, so they are read as before on both sides (with long "
        "polls, also the polls' own retries: after a no-stream answer one a minute, after a "
        "failure one every 5 s).",
    ]


def build_meta(
    cfg: ObservingConfig,
    outcome: Outcome,
    *,
    started: datetime.datetime,
    load_before: Sequence[float],
    workdir: Path,
) -> dict[str, object]:
    command = "python -m bench.observing"
    problems = [*outcome.problems, *(p for side in outcome.sides for p in side.problems)]
    return provenance.describe(started, load_before, command=command, config=cfg) | {
        "windows": {
            side.side.key: [t.isoformat(timespec="seconds") for t in side.window]
            for side in outcome.sides
        },
        "workers": cfg.shape.workers,
        "streaming_workers": streaming(cfg.shape),
        "fleet": fleet_mix(cfg.shape),
        "source": source_version(),
        "verified_before_window": "on each side, every AgentWorker's status counted what the "
        "fake workers answered (the counts blanked before the side began), and every fake "
        "worker was read since the side began",
        "pods_intact_after_window": not any(p.startswith("pod ") for p in outcome.problems),
        "pods_listed_again_in_window": any(
            observing_sides.RELISTED in p for side in outcome.sides for p in side.problems
        ),
        "problems": problems,
        "logs": str(workdir),
    }


def streaming(shape: FleetShape) -> int:
    """How many fake workers serve the change stream."""
    return sum(1 for index in range(shape.workers) if fake_fleet.streams(shape, index))


def write_results(
    cfg: ObservingConfig,
    meta: dict[str, object],
    tables: list[observing_tables.SideTable],
    stamp: str,
) -> Path:
    """bench/results/observing-<stamp>.json (everything) and observing-latest.md (the table)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"observing-{stamp}.json"
    sides = {
        key: observing_tables.to_json(t.figures, t.rows)
        for key, t in zip(cfg.sides, tables, strict=True)
    }
    path.write_text(json.dumps({**meta, "sides": sides}, indent=2) + "\n")
    problems, config, source = meta["problems"], meta["config"], meta["source"]
    assert isinstance(problems, list)
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
        f"measured for {config['window_s']:g} s a side. **The workers are lightweight loopback "
        "HTTP endpoints serving recorded /worker documents** (one process, "
        "bench/fake_workers.py, documents built with worker_runtime.http_api.worker_document); "
        f"{meta['streaming_workers']} of them serve the runtime's change stream (generation, "
        "instance, long polls held as worker_runtime/http_api.py holds them), the official "
        "worker and the faults do not. They are not worker runtimes. Their pods are the "
        "Deployments' own (the rig's controller-manager made them, its scheduler bound them "
        "to a phantom node no kubelet runs, bench/phantom.py); the benchmark wrote their "
        "status as a kubelet would, each pod's IP a fake worker's address "
        "(bench/phantom_kubelet.py). The operator reaches the API server through a counting "
        "proxy (bench/api_proxy.py).",
        "",
        *(f"{paragraph}\n" for paragraph in describe_sides(cfg)),
        f"Fleet: {json.dumps(meta['fleet'])}.",
        f"Config: {json.dumps(config)}. Host: {json.dumps(meta['host'])}.",
        "",
        observing_tables.render_markdown(tables),
        "",
        *(f"- {r.title.strip()}: {r.how}" for r in tables[0].rows if r.how),
        "",
        "API requests of the operator in the window, and the watch events it received:",
        "",
        observing_tables.render_api_markdown(tables),
        *(["", "Problems:", *(f"- {p}" for p in problems)] if problems else []),
    ]
    (RESULTS_DIR / "observing-latest.md").write_text("\n".join(md) + "\n")
    return path


def side_table(
    cfg: ObservingConfig, outcome: observing_sides.SideOutcome
) -> observing_tables.SideTable:
    figures = report.figures(outcome.samples, sync_period_s=cfg.sync_period_s)
    rows = report.rows(
        figures,
        workers=cfg.shape.workers,
        streaming=streaming(cfg.shape),
        sync_period_s=cfg.sync_period_s,
    )
    return observing_tables.SideTable(title=outcome.side.title, figures=figures, rows=rows)


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
    tables = [side_table(cfg, side) for side in outcome.sides]
    print(observing_tables.render_text(tables))
    print(observing_tables.render_api_markdown(tables))
    for problem in [*outcome.problems, *(p for side in outcome.sides for p in side.problems)]:
        print(f"problem: {problem}")
    if write:
        meta = build_meta(cfg, outcome, started=started, load_before=load_before, workdir=workdir)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = write_results(cfg, meta, tables, stamp)
        note(f"results written to {path} and {RESULTS_DIR / 'observing-latest.md'}")
    return 0


def parse_args(argv: Sequence[str] | None) -> tuple[ObservingConfig, bool, Path | None]:
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
        "--side",
        action="append",
        choices=sorted(observing_sides.SIDES),
        help="run this side (repeat for several, in the order given); default: "
        f"{', then '.join(d.sides)}",
    )
    p.add_argument("--no-write", action="store_true", help="print the table, write no files")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run the operator under cProfile, its stats to FILE with the side before the "
        "suffix (FILE-watch.prof ...; a diagnosis: the figures of such a run include the "
        "profiler's cost, and no results file is written)",
    )
    a = p.parse_args(argv)
    cfg = ObservingConfig(
        agentworkers=a.agentworkers,
        workers_per_agentworker=a.workers_per_agentworker,
        sync_period_s=a.sync_period,
        settle_s=a.settle,
        window_s=a.window,
        sides=tuple(dict.fromkeys(a.side)) if a.side else d.sides,
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
