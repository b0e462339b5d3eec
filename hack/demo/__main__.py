"""`make demo`: the main job in one command: an operator, an autoscaled fleet, real calls.

The Makefile has started the rig and exported `.rig/env`. Then:
1. the shipped CRD, the namespace `agentworker-demo` with the LiveKit credentials Secret, and
   `helm upgrade --install` of charts/agentworker-operator: the operator runs as the chart's pod
   (the rig's process runner runs its command), watching that namespace only;
2. examples/agentworker-autoscaled.yaml pointed at the rig's LiveKit server, running the call
   agent of the operator's tests (it joins each call's room and holds the call as long as the
   dispatch's metadata says), from its resting size until it is Ready;
3. real calls, rising, then a burst, then falling (`schedule`): for each, a caller joins a fresh
   room through the LiveKit server and the agent is dispatched into it (the tests' `Calls`),
   while a live view shows the workers by state, the calls, the load and the replicas;
4. once the calls have ended and the fleet is back at rest (or a bound has passed), a PNG of the
   run under .rig/demo/, a summary, and what to try next. The fleet stays up.

It exits non-zero, saying why, when a call was lost or the fleet did not scale up and down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client
from rich.console import Console

from bench.cluster import ClusterError, Kubectl, ensure_crd
from hack.demo import fleet, live, manifests, plot, schedule, timeline, verdict, view
from hack.demo.schedule import LoadPattern, PlannedCall
from tests.e2e.operator.call_agent import CALLS_PER_WORKER
from tests.e2e.operator.calls import ENTRYPOINT, CallerOutcome, Calls, Ledger
from tests.rig import env as rig_env

EXAMPLE = rig_env.REPO_ROOT / "examples" / "agentworker-autoscaled.yaml"
OUT_DIR = rig_env.RIG_DIR / "demo"
SAMPLE_EVERY_S = 1.0
EVENTS_EVERY_S = 3.0
READY_TIMEOUT_S = 150.0
SCALE_DOWN_S = 20.0
"""What the progress bar allows after the last call: the last idle worker's scale-down (the
example's 20 s window mostly runs while the calls fall) and the operator's next sync."""
TAIL_S = 5.0
"""Samples taken once the fleet is back at rest, so that the plot shows it there."""
SETTLE_TIMEOUT_S = 100.0
"""After the last call's planned end: the longest wait for the fleet to be back at rest."""
CALLERS_TIMEOUT_S = 60.0
READ_ERRORS = (client.ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """The AgentWorker the demo made, and the settings the view and the summary need."""

    manifest: manifests.Manifest
    uid: str
    agent_name: str
    resting: int
    policy: verdict.Policy


def step(console: Console, what: str, started: float) -> None:
    console.print(f"[green]✓[/] {what} [dim]({time.monotonic() - started:.0f} s)[/]")


def set_up(console: Console, rig: rig_env.RigEnv, kubectl: Kubectl, run_dir: Path) -> Setup:
    """The CRD, the namespace, the chart's operator and a fresh fleet at rest."""
    namespace, release = manifests.NAMESPACE, manifests.RELEASE
    started = time.monotonic()
    with console.status("the AgentWorker CRD (crds/)"):
        problem = ensure_crd(kubectl)
    step(console, problem or "CRD agentworkers.agentworker.dev applied and Established", started)
    started = time.monotonic()
    with console.status(f"namespace {namespace}"):
        fleet.prepare_namespace(kubectl, rig, namespace)
    step(console, f"namespace {namespace} with the LiveKit credentials Secret", started)
    started = time.monotonic()
    values = run_dir / "values.yaml"
    values.write_text(yaml.safe_dump(manifests.build_values(namespace), sort_keys=False))
    with console.status(f"helm upgrade --install {release} charts/agentworker-operator --wait"):
        fleet.install_operator(rig, namespace, release, values)
    step(console, f"helm release {release}: the operator runs as the chart's pod", started)
    started = time.monotonic()
    manifest = manifests.build_agentworker(
        yaml.safe_load(EXAMPLE.read_text()),
        namespace=namespace,
        livekit_url=rig.livekit_url,
        entrypoint=ENTRYPOINT,
    )
    with console.status(f"AgentWorker {manifests.AGENTWORKER} (a previous run's goes first)"):
        fleet.replace_agentworker(kubectl, manifest)
    resting = manifests.resting_replicas(manifest)
    with console.status(f"AgentWorker {manifests.AGENTWORKER}: {resting} workers registering"):
        uid = wait_at_rest(rig, manifest, resting)
    step(console, f"AgentWorker {manifests.AGENTWORKER} Ready: {resting} workers at rest", started)
    return Setup(
        manifest=manifest,
        uid=uid,
        agent_name=manifest["spec"]["agentName"],
        resting=resting,
        policy=verdict.Policy(
            target_load=manifests.autoscaling_number(manifest, "targetLoad", 0.5),
            min_available=int(manifests.autoscaling_number(manifest, "minAvailableWorkers", 1)),
            load_threshold=float(manifest["spec"].get("loadThreshold", 0.7)),
            calls_per_worker=CALLS_PER_WORKER,
        ),
    )


def wait_at_rest(rig: rig_env.RigEnv, manifest: manifests.Manifest, resting: int) -> str:
    """Wait until the AgentWorker is Ready with `resting` workers registered; its uid."""
    reader = fleet.FleetReader(rig, manifests.NAMESPACE, manifest["metadata"]["name"])
    deadline = time.monotonic() + READY_TIMEOUT_S
    last: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(*READ_ERRORS):
                last = reader.agentworker()
                status = last.get("status") or {}
                ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or []
                )
                if ready and status.get("readyReplicas") == status.get("available") == resting:
                    return str(last["metadata"]["uid"])
            time.sleep(1.0)
    finally:
        reader.close()
    raise ClusterError(
        f"AgentWorker not Ready with {resting} workers after {READY_TIMEOUT_S:.0f} s; "
        f"last status: {json.dumps(last.get('status'))}"
    )


@dataclass(slots=True)
class Run:
    """What the load phase gathered."""

    t0: float
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    samples: list[timeline.Sample] = dataclasses.field(default_factory=list)
    events: tuple[timeline.ScaleEvent, ...] = ()
    rooms: list[str] = dataclasses.field(default_factory=list)
    callers: list[CallerOutcome] = dataclasses.field(default_factory=list)
    """How each call went, seen by its caller."""
    errors: list[str] = dataclasses.field(default_factory=list)


def at_rest(run: Run, setup: Setup, plan: tuple[PlannedCall, ...], sample: timeline.Sample) -> bool:
    """Every planned call placed and ended, and the fleet back at its resting size (the
    operator's status too: no calls seen, none draining)."""
    started = {r["room"] for r in run.records if r.get("event") == "start"}
    ended = {r["room"] for r in run.records if r.get("event") == "end"}
    return (
        sample.t - run.t0 >= schedule.last_end_s(plan)
        and started <= ended
        and sample.desired == sample.ready == setup.resting
        and sample.draining == 0
        and sample.jobs == 0
    )


def board_of(run: Run, setup: Setup, plan: tuple[PlannedCall, ...], now: float) -> view.Board:
    elapsed = now - run.t0
    return view.Board(
        title=f"make demo: AgentWorker {manifests.AGENTWORKER} in {manifests.NAMESPACE}",
        elapsed_s=elapsed,
        expected_s=schedule.last_end_s(plan) + SCALE_DOWN_S,
        phase=schedule.phase_at(plan, elapsed),
        sample=run.samples[-1] if run.samples else None,
        planned_now=schedule.active_at(plan, elapsed),
        planned_total=len(plan),
        started=sum(1 for r in run.records if r.get("event") == "start"),
        ended=sum(1 for r in run.records if r.get("event") == "end"),
        target_load=setup.policy.target_load,
        load_threshold=setup.policy.load_threshold,
        events=run.events,
        t0=run.t0,
    )


def watch(
    run: Run, setup: Setup, plan: tuple[PlannedCall, ...], reader: fleet.FleetReader,
    ledger: Ledger, dialer: live.Dialer, screen: live.Screen,
) -> None:  # fmt: skip
    """Sample the fleet every second and show it, until it is back at rest or time is up."""
    deadline = run.t0 + schedule.last_end_s(plan) + SETTLE_TIMEOUT_S
    rested = float("inf")
    events_at = 0.0
    while True:
        now = time.time()
        run.records = ledger.records()
        try:
            status = reader.agentworker().get("status") or {}
            deployment = reader.deployment()
            if now - events_at >= EVENTS_EVERY_S:
                run.events = timeline.scale_events(reader.events(setup.uid), since=run.t0)
                events_at = now
        except READ_ERRORS:  # a slow API server: skip this reading, the next one comes
            if now > deadline:
                return
            time.sleep(SAMPLE_EVERY_S)
            continue
        calls = timeline.calls_on_line(run.records, now)
        sample = timeline.sample_from(now, status, deployment, calls)
        run.samples.append(sample)
        screen.show(board_of(run, setup, plan, now))
        if dialer.done and at_rest(run, setup, plan, sample):
            rested = min(rested, now)
        if now >= rested + TAIL_S or now > deadline:
            return
        time.sleep(max(0.0, now + SAMPLE_EVERY_S - time.time()))


def run_load(
    console: Console, rig: rig_env.RigEnv, setup: Setup, plan: tuple[PlannedCall, ...],
    run_dir: Path,
) -> Run:  # fmt: skip
    """The calls of the plan with the live view; what was seen."""
    ledger = Ledger(run_dir / "calls.jsonl")
    phone = Calls(rig, setup.agent_name, ledger)
    reader = fleet.FleetReader(rig, manifests.NAMESPACE, manifests.AGENTWORKER)
    dialer = live.Dialer(phone, schedule.waves(plan))
    run = Run(t0=time.time())
    try:
        dialer.start(time.monotonic())
        with live.Screen(console) as screen:
            watch(run, setup, plan, reader, ledger, dialer, screen)
        dialer.stop()
        run.rooms, run.errors = dialer.rooms, list(dialer.errors)
        try:
            run.callers = phone.caller_outcomes(CALLERS_TIMEOUT_S)
        except TimeoutError:
            run.errors.append(f"some callers still waited {CALLERS_TIMEOUT_S:.0f} s after the end")
        run.records = ledger.records()
        with contextlib.suppress(*READ_ERRORS):
            run.events = timeline.scale_events(reader.events(setup.uid), since=run.t0)
    finally:
        dialer.stop()
        phone.close()
        reader.close()
    return run


def report(
    console: Console, setup: Setup, plan: tuple[PlannedCall, ...], run: Run, run_dir: Path
) -> verdict.Summary:
    """The summary, the plot and the raw samples; what to try next."""
    callers_ok = {
        o.room: verdict.caller_saw_it_through(
            agent_joined=o.agent_joined, said_bye=o.said_bye, interruptions=o.interruptions
        )
        for o in run.callers
    }
    verdicts = verdict.call_verdicts(run.rooms, run.records, callers_ok)
    summary = verdict.summarize(
        planned=len(plan),
        verdicts=verdicts,
        samples=run.samples,
        events=run.events,
        records=run.records,
        t0=run.t0,
        policy=setup.policy,
        resting=setup.resting,
        errors=run.errors,
    )
    data = timeline.plot_data(
        run.samples, run.events, run.records, schedule.plan_steps(plan), t0=run.t0
    )
    stamp = datetime.datetime.fromtimestamp(run.t0, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    picture = plot.draw(
        data,
        run_dir / "demo.png",
        title=f"make demo, {stamp}: {summary.completed} of {summary.planned} calls completed, "
        f"{len(summary.lost)} lost; {summary.replicas_min} to {summary.replicas_max} workers",
        phases=schedule.phases(plan),
        target_load=setup.policy.target_load,
        load_threshold=setup.policy.load_threshold,
    )
    (run_dir / "samples.json").write_text(
        json.dumps([dataclasses.asdict(s) for s in run.samples], indent=1) + "\n"
    )
    (run_dir / "events.json").write_text(
        json.dumps([dataclasses.asdict(e) for e in run.events], indent=1) + "\n"
    )
    (run_dir / "callers.json").write_text(
        json.dumps([dataclasses.asdict(o) for o in run.callers], indent=1) + "\n"
    )
    console.print()
    console.print(verdict.paragraph(summary))
    console.print(
        f"\nThe plot: [bold]{picture}[/] (beside it: samples.json, events.json, calls.jsonl, "
        "the agent's ledger, and callers.json, each call as its caller saw it)"
    )
    return summary


def next_steps(namespace: str, name: str, release: str) -> str:
    """What to try once the demo is over, with the rig's kubeconfig."""
    patch = """'{"spec":{"autoscaling":{"minReplicas":3}}}'"""
    commands = [
        ("set -a; . .rig/env; set +a", "the rig's KUBECONFIG, kubectl and helm"),
        (f"kubectl get aw -n {namespace} -w", "workers by state, calls, load"),
        (f"kubectl describe aw {name} -n {namespace}", "conditions and scale Events"),
        (f"kubectl get pods -n {namespace} -o wide", "the workers and the operator pod"),
        ("curl -s http://<a worker's pod IP>:8081/worker", "a worker's own report"),
        (
            f"kubectl patch aw {name} -n {namespace} --type=merge -p {patch}",
            "more warm workers: watch it scale up",
        ),
        (f"helm status {release} -n {namespace}", "the operator's release"),
    ]
    return "\n".join(
        [
            "The fleet is still up. To explore it:",
            *(f"  # {why}\n  {command}" for command, why in commands),
            "`make demo` again starts a fresh fleet; `make rig-down` stops everything (the rig, "
            "the operator and the fleet).",
        ]
    )


def main(pattern: LoadPattern | None = None) -> int:
    """The demo with the default load pattern (or `pattern`); the exit code."""
    console = Console(highlight=False, soft_wrap=True)
    began = time.monotonic()
    rig = rig_env.load()
    kubectl = Kubectl(rig)
    run_dir = OUT_DIR / datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = schedule.build_schedule(pattern or LoadPattern())
    try:
        setup = set_up(console, rig, kubectl, run_dir)
        console.print(
            f"\n{len(plan)} real calls: {schedule.peak(plan)} at most at once, rising, a burst, "
            f"then falling; each a caller in a room of the rig's LiveKit server and the agent "
            f"dispatched into it (a call is {1 / CALLS_PER_WORKER:.2f} of a worker's load)\n"
        )
        run = run_load(console, rig, setup, plan, run_dir)
    except (ClusterError, KeyboardInterrupt) as error:
        console.print(f"[bold red]make demo failed[/]: {error or 'interrupted'}")
        return 1
    summary = report(console, setup, plan, run, run_dir)
    shown = kubectl("get", "aw", "-n", manifests.NAMESPACE, check=False)
    console.print(
        f"\n$ kubectl get aw -n {manifests.NAMESPACE}\n{shown.stdout.rstrip()}", markup=False
    )
    steps = next_steps(manifests.NAMESPACE, manifests.AGENTWORKER, manifests.RELEASE)
    console.print(f"\n{steps}", markup=False)
    took = time.monotonic() - began
    if summary.problems:
        for problem in summary.problems:
            console.print(f"[bold red]FAILED[/]: {problem}", soft_wrap=True)
        console.print(f"[bold red]make demo failed[/] after {took:.0f} s (the plot shows the run)")
        return 1
    console.print(f"[bold green]make demo passed[/] in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
