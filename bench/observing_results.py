"""The observing benchmark's results: what a run saw, and the files it leaves.

This module owns the facts of a run besides its tables (the fleet's mix, the commit measured,
the windows, the problems), the paragraphs that say what the sides share and what favours
which, and the two files: bench/results/<name>-<UTC time>.json (every figure of every side and
process) and <name>-latest.md (the tables, the ratios, how each figure is taken, the problems).
It measures nothing (`bench.observing_sides` does) and works out no figure
(`bench.observing_report` and `bench.observing_rows` do).
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import fake_fleet, observing_layout, observing_sides, observing_tables, provenance
from bench.fake_fleet import FleetShape
from bench.observing_sides import ObservingConfig

RESULTS_DIR = provenance.RESULTS_DIR


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one run saw: each side's, and the problems of the objects shared by the sides."""

    sides: list[observing_sides.SideOutcome]
    problems: list[str]


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


def describe_sides(cfg: ObservingConfig) -> list[str]:
    """What the sides share, how they differ, and what favours which."""
    sides = [observing_layout.side(key, workers=cfg.shape.workers) for key in cfg.sides]
    order = ", then ".join(f"`{side.title}`" for side in sides)
    paragraphs = [
        f"Sides, one after the other in this order: {order}. Each is its own operator "
        "process, or processes started at once (a sharded side: `--shards N`, one process per "
        "shard, each with its own identity), over the same objects, the same fake worker "
        "server and the same proxy. Before each side the worker counts of every status are "
        "blanked, so its own processes must write them again before its window (checked, with "
        "every worker read since the side began, and, from each process's metrics, each "
        "process holding its own shard and reading exactly that shard's AgentWorkers; checked "
        "again after the window).",
    ]
    if "no-watch" in cfg.sides:
        paragraphs += _watch_paragraphs(cfg)
    if any(side.processes > 1 for side in sides):
        paragraphs += _shard_paragraphs(cfg)
    return [
        *paragraphs,
        "Order: the later side finds the API server, the proxy and the fake worker server "
        "warm. Neither side makes the Deployments, PDBs and Services nor waits for pods: an "
        "operator that is not measured made them before the first side and ran until every "
        "pod ran (each side's operators apply them unchanged). The official worker and the "
        "faults serve no change stream, so they are read as before on every side (with long "
        "polls, also the polls' own retries: after a no-stream answer one a minute, after a "
        "failure one every 5 s).",
    ]


def _watch_paragraphs(cfg: ObservingConfig) -> list[str]:
    """What favours the operator with long polls, and what favours it without."""
    return [
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
    ]


def _shard_paragraphs(cfg: ObservingConfig) -> list[str]:
    """What favours the shards, and what favours one process."""
    return [
        "What favours the shards: the machine has 2 cores, and one operator process (one "
        "Python event loop) can use at most one of them; shard processes can use both. Each "
        "reads only its shard's workers, holds only their long polls, and its rounds cover "
        "only its AgentWorkers, so a round ends sooner and the per-process targets are met "
        "with fewer workers each. The hash split is uneven (the first row gives each shard's "
        "workers): the busiest shard is the one the targets must fit.",
        "What favours one process: every shard process runs the whole of kopf and watches "
        "every AgentWorker, Deployment and worker pod of the namespace (the API server sends "
        "each of them every event; kopf filters by shard after receiving it: see the watch "
        "events below), renews its own Lease and serves its own metrics, and its interpreter "
        "and libraries count once per process in the RSS. The processes compete with each "
        "other and with the API server, the fake worker server (one process answering all "
        f"{cfg.shape.workers:,} workers), this benchmark and the rest of the rig for the same "
        "2 cores: with more busy processes than cores a process's share is not what it would "
        "use with a core of its own, and the sum of the processes' CPU is what the "
        "installation costs. Every side here uses the long polls (as the operator ships) "
        "unless its title says otherwise.",
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
        "fake workers answered (the counts blanked before the side began), every fake "
        "worker was read since the side began, and each operator process held its own shard "
        "and had read the workers of exactly its shard's AgentWorkers (its metrics)",
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
    *,
    name: str,
) -> Path:
    """bench/results/<name>-<stamp>.json (everything) and <name>-latest.md (the table)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    sides = {key: observing_tables.to_json(t) for key, t in zip(cfg.sides, tables, strict=True)}
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
        f"The real `agent-operator` observing {meta['workers']:,} workers "
        f"({config['agentworkers']} AgentWorkers of {config['workers_per_agentworker']}) "
        f"every {config['sync_period_s']:g} s, "
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
        *(f"{line}\n" for line in observing_tables.render_ratios(tables)),
        *(f"- {r.title.strip()}: {r.how}" for r in tables[0].rows if r.how),
        "",
        "API requests of the operators in the window, and the watch events they received (a "
        "sharded side's processes together):",
        "",
        observing_tables.render_api_markdown(tables),
        *(["", "Problems:", *(f"- {p}" for p in problems)] if problems else []),
    ]
    (RESULTS_DIR / f"{name}-latest.md").write_text("\n".join(md) + "\n")
    return path
