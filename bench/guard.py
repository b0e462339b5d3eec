"""`python -m bench.guard`: the dispatch guard on against off, side by side, in three scenarios.

Runs against the rig (`set -a; . .rig/env; set +a`: its API server, controllers, process runner
and LiveKit server) with the call agent of the operator's e2e tests and `agent-operator` (default
5 s sync period, no webhooks). Each scenario runs both sides one after the other (the order flips
from one scenario to the next), each in its own namespace with its own operator; the same seeded
calls on both sides, each a real caller who joins its room and then the dispatch, and waits up to
`--wait-s` for an agent:

(i)   from zero: guard on at minReplicas 0, scaled to zero first; guard off at minReplicas 1 (the
      API server refuses 0 without the guard), one warm worker; Poisson arrivals;
(ii)  a full fleet at maxReplicas (2 workers of 3 slots, filled with calls of random length that
      end over time); Poisson arrivals of calls of random length;
(iii) a burst of three times the warm headroom: one warm worker of rooms / 3 slots, every call
      at once.

Per scenario and side: rooms served, dispatch -> agent joined (p50, p95, slowest, as the caller
saw it), the most agents any room had at once, the calls that never got an agent. It prints the
table and writes bench/results/guard-<UTC time>.json and bench/results/guard-latest.md. It
asserts nothing. Every namespace it makes is deleted and every operator it starts is stopped on
the way out, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import random
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import cluster, guard_sides, phases, provenance
from bench import guard_plan as plan
from bench import guard_report as report
from bench.cluster import ClusterError, Kubectl
from bench.phases import note
from tests.rig import env as rig_env

SCENARIOS = tuple(s.key for s in plan.scenarios(30))


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardConfig:
    """What to run and how much."""

    traffic: plan.Traffic
    scenarios: tuple[str, ...] = SCENARIOS
    sides: tuple[str, ...] = plan.SIDES
    notes: tuple[str, ...] = ()
    """Said in the results as given (e.g. that the rig was shared)."""


@dataclass(slots=True)
class Results:
    """Everything measured in one run, and what went wrong on the way."""

    sides: list[report.SideRun] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def measure(cfg: GuardConfig, workdir: Path, run_id: str, found: Results) -> None:
    """Every chosen scenario, both sides in turn; a side that fails is a failure in the
    results."""
    rig = rig_env.load()
    kubectl = Kubectl(rig)
    crd_problem = cluster.ensure_crd(kubectl)
    if crd_problem:
        found.notes.append(crd_problem)
    setup = guard_sides.Setup(rig=rig, kubectl=kubectl, workdir=workdir, run_id=run_id)
    for index, scenario in enumerate(plan.scenarios(cfg.traffic.rooms)):
        if scenario.key not in cfg.scenarios:
            continue
        for side in phases.interleaved(cfg.sides, index):
            try:
                found.sides.append(guard_sides.run_side(setup, scenario, index, side, cfg.traffic))
            except (ClusterError, TimeoutError) as error:
                found.failures.append(f"{scenario.key}, {side}: {error}")


def run(cfg: GuardConfig, *, write: bool) -> int:
    started, load_before = provenance.utc_now(), os.getloadavg()
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="agentworker-guard-"))
    note(f"run {run_id}: logs and ledgers in {workdir}; seed {cfg.traffic.seed}")
    signal.signal(signal.SIGTERM, _interrupt)
    found = Results(notes=list(cfg.notes))
    measure(cfg, workdir, run_id, found)
    markdown = render(found, cfg)
    print(markdown)
    if write:
        meta = provenance.describe(
            started, load_before, command="python -m bench.guard", config=cfg
        ) | {"source": _source(), "logs": str(workdir)}
        path = write_results(found, meta, markdown, started)
        note(f"results written to {path} and {path.with_name('guard-latest.md')}")
    return 0 if not found.failures else 1


def _source() -> dict[str, str]:
    """The commit, and the files of the operator and the runtime that differ from it (the run
    measures the working tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=rig_env.REPO_ROOT, capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "operator", "worker_runtime", "crds"),
    }


def describe_sides(cfg: GuardConfig) -> list[str]:
    """What each scenario's sides ran, and what favours either."""
    t = cfg.traffic
    by_key = {s.key: s for s in plan.scenarios(t.rooms)}
    zero, full, burst = by_key["from-zero"], by_key["full"], by_key["burst"]
    lo, hi = t.hold_s
    flo, fhi = t.filler_hold_s
    return [
        f"Both sides of every scenario: an AgentWorker of the call agent "
        f"(`tests.e2e.operator.call_agent`, this repository's runtime), loadThreshold "
        f"{plan.LOAD_THRESHOLD}, targetLoad 0.5, one idle process, minAvailableWorkers 1, "
        "scale-up and scale-down at their defaults during the calls (up to 4 pods per 15 s; a "
        f"5 min window before removing any), drainTimeout {guard_sides.DRAIN_TIMEOUT}; "
        "`agent-operator` with its default 5 s sync period and no LiveKit webhooks. They differ "
        f"in `spec.dispatchGuard.enabled` (maxWait {t.wait_s:.0f} s) and, in (i), minReplicas. "
        "The sides run one after the other (not at once), each in its own namespace; the order "
        "flips from one scenario to the next. The same seeded calls on both sides.",
        f"Calls: {t.rooms} a side, each a caller who joins its room, then the dispatch "
        f"(`Calls.start_watched`), and who waits up to {t.wait_s:.0f} s for an agent; the "
        f"agent holds the call {lo:.0f}-{hi:.0f} s (uniform, seeded). Poisson arrivals at "
        f"{t.rate_per_s:g}/s in (i) and (ii), seed {t.seed} + scenario index.",
        f"{zero.title}: guard on at minReplicas 0, scaleToZeroAfter "
        f"{guard_sides.SCALE_TO_ZERO_AFTER}, brought to zero workers (no pod left) before the "
        "first call (a 3 s scale-down window to get there, the default window restored "
        "before the calls); guard off at minReplicas "
        "1 (the API server refuses 0 without the guard, so this is what a user runs instead): "
        f"one warm worker registered at the first call. maxReplicas {zero.max_replicas}, "
        f"{zero.slots} calls a worker. **This favours the guard-off side**: its first calls "
        "find a worker at once, while the guard side's first call waits for a worker to start; "
        "the price (one worker kept when there is no call) is not in the table.",
        f"{full.title}: both at minReplicas = maxReplicas = {full.max_replicas} workers of "
        f"{full.slots} calls, filled first with {full.fillers} calls without a caller "
        f"({flo:.0f}-{fhi:.0f} s, seeded, one at a time) so that both workers are full when the "
        "measured calls start; capacity comes free as calls end.",
        f"{burst.title}: both at minReplicas 1, maxReplicas {burst.max_replicas}: one warm "
        f"worker of {burst.slots} calls, and all {t.rooms} calls at once (each from its own "
        "thread: callers connect concurrently, each dispatch goes out as soon as its caller is "
        "in the room; each timeline says over how long the dispatches spread). The server keeps "
        "trying a dispatch for a few seconds before it drops it, so the guard-off side serves "
        "more when its own scale-up happens to land within them: that count varies from run to "
        "run.",
    ]


HOW = (
    "dispatch -> agent joined, caller saw: from `create_dispatch` returning in the benchmark's "
    "process (its caller already in the room) to the caller's `participant_connected` for the "
    "agent, both on the benchmark's monotonic clock; percentiles over the rooms served (linear "
    "interpolation), the rooms not served are in 'never got an agent'. The LiveKit server tells "
    "the others of a participant that publishes no track only on a 3 s tick of the room "
    "(`subscriberUpdateInterval` in livekit-server's pkg/rtc/room.go; a publisher's update goes "
    "at once), and the call agent publishes nothing: this figure is the agent's arrival rounded "
    "up to the room's next tick (about 2.9 s for an agent that comes at once, the caller having "
    "started the room's ticker just before the dispatch)",
    "server's log: the server's first CreateDispatch of the room -> the first agent's "
    "'participant active' there, both from the LiveKit server's log (one clock, milliseconds): "
    "when the agent actually arrived",
    "most agents in a room: the most agents in the room at once, from the caller's joins and "
    "leaves; a room with two agents at once, two jobs in the call agent's ledger, or two agents "
    "in the server's log (one after the other included) fails the target",
    f"guard off: a room whose dispatch record still has no job {guard_sides.DROP_AFTER_S:.0f} s "
    "after it was made is counted as never served at once (the LiveKit server does not retry a "
    "dropped dispatch), so that side does not wait its callers' time out",
    "server drops: the LiveKit server's log lines dropping a room job of the side's agent ('not "
    "dispatching agent job since no worker is available', 'failed to send job request'); on the "
    "guard's side a dropped re-issue counts again",
    "guard re-issues: the operator's 'held dispatches issued again' log lines, their counts "
    "added; workers: the AgentWorker's status.replicas as sampled every second",
    "without webhooks the guard sees a dropped dispatch at its next round: within the 5 s sync "
    "period when nothing is held, every second while something is",
    "a call that arrives while a slot is free is served by the server at once, ahead of older "
    "calls the guard holds (they go at its next round)",
)


def render(found: Results, cfg: GuardConfig) -> str:
    """The whole Markdown body after the title: what ran, the table, findings, timelines."""
    titles = {s.key: s.title for s in plan.scenarios(cfg.traffic.rooms) if s.key in cfg.scenarios}
    lines = [
        "## The dispatch guard on against off",
        "",
        *(f"{paragraph}\n" for paragraph in describe_sides(cfg)),
        report.render(found.sides, titles),
        "",
        *(f"- {how}" for how in HOW),
        "",
    ]
    odd = [f for side in found.sides for f in report.findings(side, wait_s=cfg.traffic.wait_s)]
    odd += report.source_changes(found.sides)
    lines += ["Findings:", *(f"- {f}" for f in odd or ["none: no room had two agents"]), ""]
    for side in found.sides:
        row = report.summarize(side)
        lines += [
            f"Timeline, {side.scenario}, {side.side} (source {side.source}; offsets from its first "
            "call; "
            f"the side took {side.duration_s:.0f} s; dispatches spread over "
            f"{row.dispatch_span_s:.1f} s"
            + (f"; filled in {side.fill_s:.0f} s" if side.fill_s else "")
            + "):"
        ]
        lines += [f"- {step}" for step in side.timeline]
        lines += [f"- never got an agent: {', '.join(row.never)}"] if row.never else []
        lines += [f"- problem: {p}" for p in side.problems] + [""]
    lines += provenance.closing_lines(found.failures, found.notes)
    return "\n".join(lines)


def write_results(
    found: Results, meta: dict[str, object], markdown: str, started: datetime.datetime
) -> Path:
    body = {
        **meta,
        "sides": [report.side_json(s) for s in found.sides],
        "failures": found.failures,
        "notes": found.notes,
    }
    return provenance.write("guard", "Dispatch guard benchmark", started, body, markdown)


def parse_args(argv: Sequence[str] | None) -> tuple[GuardConfig, bool]:
    p = argparse.ArgumentParser(prog="python -m bench.guard", description=__doc__.split("\n")[0])
    p.add_argument("--rooms", type=int, default=30, help="calls per side and scenario")
    p.add_argument("--rate", type=float, default=0.5, help="mean arrivals per second, (i), (ii)")
    p.add_argument("--wait-s", type=float, default=120.0, help="how long a caller waits")
    p.add_argument("--seed", type=int, help="the calls' seed (default: random, printed)")
    p.add_argument("--only", choices=SCENARIOS, action="append", help="a scenario (repeatable)")
    p.add_argument("--side", choices=plan.SIDES, help="one side alone")
    p.add_argument("--note", action="append", default=[], help="a note for the results")
    p.add_argument("--no-write", action="store_true", help="print the table, write no files")
    a = p.parse_args(argv)
    if a.rooms < 3 or a.rate <= 0 or a.wait_s <= 0:
        p.error("--rooms must be at least 3, --rate and --wait-s above 0")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    traffic = plan.Traffic(seed=seed, rooms=a.rooms, rate_per_s=a.rate, wait_s=a.wait_s)
    cfg = GuardConfig(
        traffic=traffic,
        scenarios=tuple(a.only) if a.only else SCENARIOS,
        sides=(a.side,) if a.side else plan.SIDES,
        notes=tuple(a.note),
    )
    return cfg, not a.no_write


def main(argv: Sequence[str] | None = None) -> int:
    cfg, write = parse_args(argv)
    try:
        return run(cfg, write=write)
    except ClusterError as error:
        print(f"bench: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; operators stopped, namespaces deleted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
