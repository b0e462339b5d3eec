"""`python -m bench.scaling`: how fast the operator adds a worker, and what a scale-down costs.

Runs against the rig (`set -a; . .rig/env; set +a`: its API server, controllers, scheduler,
process runner and LiveKit server) with the call agent of the operator's e2e tests
(`tests.e2e.operator.call_agent`: 4 calls per worker, 3 of them read as full), and the operator
as `agent-operator` with its default 5 s sync period:

(a) reaction: one ready worker of an AgentWorker autoscaled 1..3 gets 3 calls; from the third
    call's start to the new worker registered with LiveKit, split at the operator's decision,
    the pod's creation and the worker process's start; median of `--trials` trials;
(c) the headline, side by side in one run: a plain Deployment (default 30 s grace period) and
    this operator (WaitForIdle, then Drain) scaled 3 -> 1 while 10 calls of 90 s run (3 with a
    caller in the room); calls lost on each side, and how long the fleet took to reach 1 pod.

It prints the tables and writes bench/results/scaling-<UTC time>.json and
bench/results/scaling-latest.md. It asserts nothing. Every namespace it makes is deleted and
every operator it starts is stopped on the way out, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import cluster, manifests, provenance, reaction, scaledown
from bench import scaling_report as report
from bench.cluster import ClusterError, Kubectl, OperatorProcess
from bench.phases import note
from tests.rig import env as rig_env

MEASUREMENTS = ("reaction", "scaledown")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingConfig:
    """What to measure and how much."""

    trials: int = 5
    """Reaction trials (each a fresh AgentWorker from one worker)."""
    load: scaledown.Load = dataclasses.field(default_factory=scaledown.Load)
    """The calls of every scale-down side."""
    sides: tuple[str, ...] = scaledown.SIDES
    measurements: tuple[str, ...] = MEASUREMENTS


@dataclass(slots=True)
class Results:
    """Everything measured in one run, and what went wrong on the way."""

    trials: list[report.ReactionTrial] = dataclasses.field(default_factory=list)
    sides: list[report.ScaleDownSide] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    """What the reader should know about the run (e.g. which CRD was used)."""


def measure_reaction(
    rig: rig_env.RigEnv, kubectl: Kubectl, workdir: Path, run_id: str, trials: int
) -> list[report.ReactionTrial]:
    """(a) side by side: an operator that long-polls the workers (the default) and one that
    reads them each sync period only, each in its own namespace; their trials take turns."""
    how = (("watch", ()), ("periodic", ("--no-worker-watch",)))
    sides = zip(report.REACTION_SIDES, how, strict=True)
    with contextlib.ExitStack() as stack:
        setups = []
        for side, (tag, args) in sides:
            namespace = f"bench-scaling-{run_id}-reaction-{tag}"
            note(f"reaction, {side}: {trials} trials in namespace {namespace}")
            stack.enter_context(cluster.namespace(kubectl, namespace, credentials=rig))
            log = workdir / f"operator-reaction-{tag}.log"
            operator = stack.enter_context(OperatorProcess(kubectl, namespace, log, args))
            setups.append(
                reaction.Reaction(
                    rig=rig,
                    kubectl=kubectl,
                    namespace=namespace,
                    operator=operator,
                    workdir=workdir,
                    run_id=run_id,
                    side=side,
                    tag=tag,
                )
            )
        return reaction.run_trials(setups, trials)


def run(cfg: ScalingConfig, *, write: bool) -> int:
    rig = rig_env.load()
    kubectl = Kubectl(rig)
    crd_problem = cluster.ensure_crd(kubectl)
    started, load_before = provenance.utc_now(), os.getloadavg()
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-scaling-"))
    note(f"run {run_id}: logs and ledgers in {workdir}")
    results = Results(notes=[crd_problem] if crd_problem else [])
    for line in results.notes:
        note(line)
    if "reaction" in cfg.measurements:
        try:
            results.trials = measure_reaction(rig, kubectl, workdir, run_id, cfg.trials)
        except ClusterError as error:
            results.failures.append(f"reaction: {error}")
    if "scaledown" in cfg.measurements:
        bench = scaledown.Bench(
            rig=rig, kubectl=kubectl, workdir=workdir, run_id=run_id, load=cfg.load
        )
        for side in cfg.sides:
            try:
                results.sides.append(scaledown.run_side(bench, side))
            except ClusterError as error:
                results.failures.append(f"{side}: {error}")
    markdown = render(results, cfg)
    print(markdown)
    if write:
        meta = provenance.describe(
            started, load_before, command="python -m bench.scaling", config=cfg
        ) | {"server": rig.livekit_url, "logs": str(workdir)}
        path = write_results(results, meta, markdown, started)
        note(f"results written to {path} and {path.with_name('scaling-latest.md')}")
    return 0 if not results.failures else 1


REACTION_HOW = [
    "third call started: the 'start' line the call agent writes to the ledger (Unix time)",
    "operator decided: the operator's own 'scaling' log line (1 -> 2 workers)",
    "new pod created: the pod's first event on a `kubectl get pods --watch` started before the "
    "AgentWorker",
    "worker process started: the new worker's own 'starting worker' log line",
    "registered with LiveKit: the new worker's own 'registered with LiveKit' log line",
]


def render(results: Results, cfg: ScalingConfig) -> str:
    """The whole Markdown body after the title: both tables, how, timelines, problems."""
    lines: list[str] = []
    if results.trials:
        lines += [
            "## (a) Reaction: the one worker full -> a new worker registered with LiveKit",
            "",
            "AgentWorker autoscaled 1..3 (targetLoad 0.5, loadThreshold "
            f"{manifests.LOAD_THRESHOLD}, scaleUp 4 pods per 15 s), operator sync period 5 s "
            "(the default); 3 calls of "
            f"{reaction.HOLD_S:.0f} s to its one worker (load 0.75). Two operators side by "
            "side, their trials taking turns: one long-polls each worker's /worker (the "
            "default), one reads the workers each sync period only (`--no-worker-watch`, as "
            "before). The steps after the decision do not depend on the side.",
            "",
            report.render_reaction_sides(results.trials),
            "",
            *(
                line
                for side in report.REACTION_SIDES
                for line in (
                    f"{side}:",
                    "",
                    report.render_reaction([t for t in results.trials if t.side == side]),
                    "",
                )
            ),
            *(f"- {how}" for how in REACTION_HOW),
            "",
            *(
                f"- trial {i + 1}, {t.side}: pod {t.pod or 'n/a'}; event: {t.event or 'n/a'}"
                + (f"; problems: {'; '.join(t.problems)}" if t.problems else "")
                for i, t in enumerate(results.trials)
            ),
            "",
        ]
    if results.sides:
        load = cfg.load
        lines += [
            f"## (c) Scale-down 3 -> 1 while {load.calls} calls of {load.hold_s:.0f} s run "
            f"({load.real} real, with a caller)",
            "",
            report.render_scaledown(results.sides),
            "",
            "- a call is lost when its ledger has no 'end' line (its worker was SIGKILLed), when "
            "the end line says how != completed, or, for a real call, when its caller saw the "
            "agent leave without saying bye or early",
            "- times are from the scale-down (the `kubectl scale` or the AgentWorker patch), read "
            "from a pod watch and a 1 s poll of the Deployment",
            *(f"- {s.side}: {s.how}" for s in results.sides),
            "",
        ]
        for side in results.sides:
            lines += [f"Timeline, {side.side}:", *(f"- {step}" for step in side.scale_log)]
            lines += [f"- problem: {p}" for p in side.problems] + [""]
    lines += provenance.closing_lines(results.failures, results.notes)
    return "\n".join(lines)


def write_results(
    results: Results, meta: dict[str, object], markdown: str, started: datetime.datetime
) -> Path:
    trials = [{**dataclasses.asdict(t), "breakdown_s": report.breakdown(t)} for t in results.trials]
    medians = {
        side: {
            key: report.median([report.breakdown(t)[key] for t in results.trials if t.side == side])
            for key, _ in (*report.STEPS, report.TOTAL)
        }
        for side in report.REACTION_SIDES
    }
    body = {
        **meta,
        "reaction": {"median_s": medians, "trials": trials},
        "scaledown": report.to_json(results.sides),
        "failures": results.failures,
        "notes": results.notes,
    }
    return provenance.write("scaling", "Scaling benchmark", started, body, markdown)


def parse_args(argv: Sequence[str] | None) -> tuple[ScalingConfig, bool]:
    d = ScalingConfig()
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=d.trials, help="reaction trials (>= 5)")
    p.add_argument("--calls", type=int, default=d.load.calls, help="calls per scale-down side")
    p.add_argument("--real", type=int, default=d.load.real, help="of which real, with a caller")
    p.add_argument("--hold-s", type=float, default=d.load.hold_s, help="scale-down calls' length")
    p.add_argument("--only", choices=MEASUREMENTS, help="one measurement alone")
    p.add_argument("--side", choices=scaledown.SIDES, action="append", help="scale-down sides")
    p.add_argument("--no-write", action="store_true", help="print the tables, write no files")
    a = p.parse_args(argv)
    cfg = ScalingConfig(
        trials=a.trials,
        load=scaledown.Load(calls=a.calls, real=a.real, hold_s=a.hold_s),
        sides=tuple(a.side) if a.side else d.sides,
        measurements=(a.only,) if a.only else d.measurements,
    )
    return cfg, not a.no_write


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    cfg, write = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so the finally blocks clean up
    try:
        return run(cfg, write=write)
    except ClusterError as error:
        print(f"bench: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; namespaces deleted, operators stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
