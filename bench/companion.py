"""`python -m bench.companion`: the official worker with and without the companion, side by side.

Runs against the rig (`set -a; . .rig/env; set +a`: its LiveKit server, and for (b) its API
server, controllers and process runner) with livekit-agents 1.8.9 from its own venv
(bench/venv.py), both sides in one run:

(a) overhead: the runtime benchmark's official agent started `--starts` times with and without
    the companion, alternating (so the machine's noise hits both): start -> registered and the
    idle memory of its process tree; then one of each running side by side, `--dispatches`
    sequential dispatches alternating: job offered -> entrypoint. Medians, the ratio with /
    without, and a noise figure (the ratio's 95 % bootstrap interval), so the table says
    "within noise" (the interval holds 1) or not;
(b) scale-down: calls arriving at random (Poisson, seeded; the seed is printed, `--seed`
    replays it) through a scale-down `--replicas` -> `--to` by the operator of an AgentWorker
    of the official worker, spec.companion.mode Disabled (deletion cost and SIGTERM; the worker
    drains its calls) against Inject (the default: POST /retire first): the calls cut (target 0
    both ways) and the worker-seconds the victims held after the decision to remove them.

It prints the tables and writes bench/results/companion-<UTC time>.json and
bench/results/companion-latest.md. It asserts nothing. Every worker, operator and namespace it
starts is stopped or deleted on the way out, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import random
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import cluster, companion_overhead, companion_scaledown, phases, provenance, venv
from bench import companion_report as report
from bench.cluster import ClusterError, Kubectl
from bench.companion_overhead import OverheadConfig
from bench.companion_scaledown import Traffic
from bench.phases import BenchError, Samples, note
from bench.runtime import describe_breakdown
from bench.runtimes import MissingServer, server_from_env
from bench.workers import WorkerFailed, kill_leftovers
from tests.rig import env as rig_env

MEASUREMENTS = ("overhead", "scaledown")


@dataclass(frozen=True, slots=True, kw_only=True)
class CompanionConfig:
    """What to measure and how much."""

    overhead: OverheadConfig = dataclasses.field(default_factory=OverheadConfig)
    traffic: Traffic
    rounds: int = 1
    """Scale-downs per side (round r uses seed + r; the order of the sides flips every round)."""
    measurements: tuple[str, ...] = MEASUREMENTS


SMALL = CompanionConfig(
    overhead=OverheadConfig(starts=4, dispatches=6),
    traffic=Traffic(seed=0, rate_per_s=0.2, hold_s=10.0, before_s=15.0, after_s=15.0),
)
"""`--small`: enough to see every figure, for developing the harness (a few minutes)."""


@dataclass(slots=True)
class Results:
    """Everything measured in one run, and what went wrong on the way."""

    comparisons: list[report.Comparison] = dataclasses.field(default_factory=list)
    samples: dict[str, Samples] = dataclasses.field(default_factory=dict)
    sides: list[report.DrainSide] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


async def _overhead(
    python: Path, workdir: Path, cfg: OverheadConfig, run_id: str
) -> dict[str, Samples]:
    """(a); SIGTERM or SIGINT cancel it, and the workers are stopped."""
    this = asyncio.current_task()
    assert this is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, this.cancel)
    return await companion_overhead.measure(server_from_env(), python, workdir, cfg, run_id)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def measure_scaledown(
    cfg: CompanionConfig, python: Path, workdir: Path, run_id: str, found: Results
) -> None:
    """(b), every round of both sides; a side that fails is a failure in the results."""
    rig = rig_env.load()
    kubectl = Kubectl(rig)
    crd_problem = cluster.ensure_crd(kubectl)
    if crd_problem:
        found.notes.append(crd_problem)
    setup = companion_scaledown.Setup(
        rig=rig, kubectl=kubectl, workdir=workdir, run_id=run_id, python=python
    )
    for r in range(cfg.rounds):
        traffic = dataclasses.replace(cfg.traffic, seed=cfg.traffic.seed + r)
        note(f"scale-down round {r}: Poisson arrivals, seed {traffic.seed}")
        for side in phases.interleaved(report.SIDES, r):
            try:
                found.sides.append(companion_scaledown.run_side(setup, side, traffic, r))
            except ClusterError as error:
                found.failures.append(f"{side}, round {r}: {error}")


def run(cfg: CompanionConfig, *, write: bool) -> int:
    started, load_before = provenance.utc_now(), os.getloadavg()
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-companion-"))
    note(f"run {run_id}: logs and ledgers in {workdir}; scale-down seed {cfg.traffic.seed}")
    python = venv.ensure_official_venv(venv.AGENTS_VERSION)
    found = Results()
    if "overhead" in cfg.measurements:
        try:
            found.samples = asyncio.run(_overhead(python, workdir, cfg.overhead, run_id))
            found.comparisons = companion_overhead.comparisons(found.samples)
        except (BenchError, WorkerFailed, MissingServer) as error:
            found.failures.append(f"overhead: {error}")
    signal.signal(signal.SIGTERM, _interrupt)  # (a)'s loop gave SIGTERM back its default
    if "scaledown" in cfg.measurements:
        measure_scaledown(cfg, python, workdir, run_id, found)
    markdown = render(found, cfg)
    print(markdown)
    if write:
        meta = provenance.describe(
            started, load_before, command="python -m bench.companion", config=cfg
        ) | {"livekit_agents": venv.AGENTS_VERSION, "logs": str(workdir)}
        path = write_results(found, meta, markdown, started)
        note(f"results written to {path} and {path.with_name('companion-latest.md')}")
    return 0 if not found.failures else 1


NOISE_HOW = (
    "noise: the 95 % bootstrap interval of the ratio (both sides' samples resampled with "
    f"replacement {report.RESAMPLES} times, fixed seed): how far the ratio could move with this "
    "run's scatter. Within noise when it holds 1; a steady cost over quiet samples (memory) is "
    "beyond noise however small, and the difference column says how big"
)
DRAIN_HOW = (
    "a call is cut when its ledger has no 'end' line by its hold time plus "
    f"{companion_scaledown.END_MARGIN_S:.0f} s, or the end line says how != completed",
    "victims: the pods marked for deletion after the patch; each holds capacity from the "
    "operator's decision that removed it (its 'scaling' log line, the last one before the pod "
    "was marked) until the pod is gone from a `kubectl get pods --watch`; the worker-seconds "
    "add these up",
    "retired first: the victim's own log says 'retired: taking no new job' (POST /retire, the "
    "companion's compare-and-set); without the companion the operator takes an idle worker as "
    "it last observed it, gives it the lowest deletion cost and lowers the replicas (SIGTERM)",
)


def render(found: Results, cfg: CompanionConfig) -> str:
    """The whole Markdown body after the title: both tables, how, timelines, problems."""
    lines: list[str] = []
    if found.comparisons:
        rows = [report.summarize(c) for c in found.comparisons]
        o = cfg.overhead
        lines += [
            f"## (a) Overhead: livekit-agents {venv.AGENTS_VERSION} with and without the companion",
            "",
            f"`bench/agents/official.py` ({o.idle_processes} idle processes) started "
            f"{o.starts} times each (+1 unmeasured), alternating, memory sampled {o.settle_s:.0f} "
            f"s after each start registered; then one of each running side by side, "
            f"{o.dispatches} sequential dispatches each, alternating. Medians.",
            "",
            report.render_overhead(rows),
            "",
            *(f"- {c.title}: {c.how}" for c in found.comparisons),
            f"- {NOISE_HOW}",
            "",
        ]
        for key, samples in found.samples.items():
            breakdown = describe_breakdown(samples.idle_breakdown)
            lines += [f"- idle RSS by process, {key}, last start (MB): {breakdown}"]
            lines += [f"- problem ({key}): {p}" for p in samples.problems]
        lines.append("")
    if found.sides:
        t = cfg.traffic
        lines += [
            f"## (b) Scale-down {t.replicas} -> {t.to} through the operator while calls arrive "
            "at random",
            "",
            f"Poisson arrivals, seed {t.seed} (round r: seed + r; the same calls on both sides), "
            f"{t.rate_per_s:g} calls/s for {t.before_s:.0f} s before and {t.after_s:.0f} s after "
            f"the AgentWorker is patched to {t.to} worker(s); calls of {t.hold_s:.0f} s "
            "(`official_agent.py`, 4 calls = load 1, full at 0.7); scaleDown all at once with no "
            "stabilization window; the operator's default sync period (5 s) and busyWorkers "
            f"(WaitForIdle). {report.WITHOUT}: spec.companion.mode Disabled; {report.WITH}: "
            f"Inject (the default). Rounds: {cfg.rounds}.",
            "",
            report.render_drain(found.sides),
            "",
            *(f"- {how}" for how in DRAIN_HOW),
            "",
        ]
        for side in found.sides:
            lines += [f"Timeline, {side.side}, round {side.round}:"]
            lines += [f"- {step}" for step in side.timeline]
            lines += [f"- problem: {p}" for p in side.problems] + [""]
    lines += provenance.closing_lines(found.failures, found.notes)
    return "\n".join(lines)


def write_results(
    found: Results, meta: dict[str, object], markdown: str, started: datetime.datetime
) -> Path:
    body = {
        **meta,
        "overhead": {
            c.key: report.overhead_json(c, report.summarize(c)) for c in found.comparisons
        },
        "overhead_problems": {k: s.problems for k, s in found.samples.items()},
        "scaledown": [report.drain_json(s) for s in found.sides],
        "failures": found.failures,
        "notes": found.notes,
    }
    return provenance.write("companion", "Companion benchmark", started, body, markdown)


def parse_args(argv: Sequence[str] | None) -> tuple[CompanionConfig, bool]:
    p = argparse.ArgumentParser(
        prog="python -m bench.companion", description=__doc__.split("\n")[0]
    )
    p.add_argument("--small", action="store_true", help="small sizes, for a quick look")
    p.add_argument("--starts", type=int, help="(a) measured starts per side")
    p.add_argument("--dispatches", type=int, help="(a) sequential dispatches per side")
    p.add_argument("--seed", type=int, help="(b) the Poisson arrivals' seed (default: random)")
    p.add_argument("--rate", type=float, help="(b) mean call arrivals per second")
    p.add_argument("--hold-s", type=float, help="(b) each call's length")
    p.add_argument("--before-s", type=float, help="(b) arrivals before the scale-down")
    p.add_argument("--after-s", type=float, help="(b) arrivals after it")
    p.add_argument("--replicas", type=int, help="(b) workers before the scale-down")
    p.add_argument("--to", type=int, help="(b) workers after it")
    p.add_argument("--rounds", type=int, help="(b) scale-downs per side")
    p.add_argument("--only", choices=MEASUREMENTS, help="one measurement alone")
    p.add_argument("--no-write", action="store_true", help="print the tables, write no files")
    a = p.parse_args(argv)
    base = SMALL if a.small else CompanionConfig(traffic=Traffic(seed=0))
    overhead = dataclasses.replace(
        base.overhead,
        **{k: v for k, v in (("starts", a.starts), ("dispatches", a.dispatches)) if v is not None},
    )
    given = {
        "seed": a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31),
        "rate_per_s": a.rate,
        "hold_s": a.hold_s,
        "before_s": a.before_s,
        "after_s": a.after_s,
        "replicas": a.replicas,
        "to": a.to,
    }
    traffic = dataclasses.replace(base.traffic, **{k: v for k, v in given.items() if v is not None})
    cfg = CompanionConfig(
        overhead=overhead,
        traffic=traffic,
        rounds=a.rounds if a.rounds is not None else base.rounds,
        measurements=(a.only,) if a.only else MEASUREMENTS,
    )
    return cfg, not a.no_write


def main(argv: Sequence[str] | None = None) -> int:
    cfg, write = parse_args(argv)
    try:
        return run(cfg, write=write)
    except (ClusterError, venv.VenvError) as error:
        print(f"bench: failed: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "bench: interrupted; workers and operators stopped, namespaces deleted", file=sys.stderr
        )
        return 130
    finally:
        kill_leftovers()


if __name__ == "__main__":
    sys.exit(main())
