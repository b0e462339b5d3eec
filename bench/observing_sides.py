"""One side of the observing benchmark: its operator processes (one, or a shard each), measured.

This module owns the operators of a run. Before the sides, `make_pods` runs one that is not
measured until the Deployments it makes have all their pods running on the phantom node (the
phantom node's kubelet, `bench.phantom_kubelet`, starts them), and stops it. Then, for each
side (`bench.observing_layout.Side`), with what `bench.observing` made for the whole run (the
objects and pods, the fake worker server, the counting proxy), `run_side` blanks the worker
counts of every AgentWorker's status (an earlier operator wrote them; now only this side's can
make them match again), starts the side's `agent-operator` processes at once, each with its
own identity, metrics port and log, waits (bounded) until each process holds its own shard and
has read exactly that shard's AgentWorkers, every status counts what the fake workers answer
and every worker was read since the side began, lets it settle, samples once a second for the
window, checks the statuses and the split again, and stops the processes. No operator's log may
show it listing the pods again in the window (`relists_in_window`): its pod watch and the
Deployments agree. It makes no object itself and works out no figure (`bench.observing_report`
does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from agentworker_operator import kube
from bench import fake_fleet, phantom, phantom_kubelet
from bench import observing_layout as layout
from bench import observing_processes as processes
from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.fake_fleet import FleetShape
from bench.observing_layout import Role, Seen, Side
from bench.provenance import utc_now
from bench.workers import free_port

VERIFY_POLL_S = 2.0
PER_THOUSAND = 1_000
"""The waits for the pods and the Deployments grow with the fleet: their bounds are per 1,000
workers (the controller-manager makes pods at its client's rate, about 20 a second)."""
UNMEASURED_LEASE_S = 60.0
"""--lease-duration of the operator that makes the pods (the sides' keep the default)."""
MAX_RESTARTS = 2
"""How often one operator process that exits before its side's window (a Lease lost while
several processes start at once on 2 cores) is started again before the run gives up."""
MAX_POLL_S = 5.0
"""The longest pause between two listings of the pods while they are started."""
COUNT_FIELDS = (
    "available",
    "full",
    "draining",
    "unknown",
    "starting",
    "activeJobs",
    "unknownWorkers",
)
"""The status fields `fake_fleet.counts_of` reads: blanked before each side."""
RELIST = "the pod watch disagrees with the Deployment"
"""How the operator's warning begins when it lists the pods again (agentworker_operator.sync):
its pod watch and the Deployment's status.replicas disagreed for rounds in a row."""
RELISTED = "the operator listed the pods again in the window"
"""How the problem `relists_in_window` finds begins."""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservingConfig:
    """How big the fleet is, how long to look, and which sides, in which order."""

    agentworkers: int = 10
    workers_per_agentworker: int = 100
    sync_period_s: float = 5.0
    """The operator's --sync-period."""
    settle_s: float = 30.0
    """Seconds between the statuses first matching and the window, on each side."""
    window_s: float = 90.0
    """Seconds measured on each side."""
    sample_s: float = 1.0
    change_period_s: float = 60.0
    """Seconds between two draws of a changing worker's calls (5% of the workers)."""
    verify_timeout_s: float = 180.0
    """Bound of the wait for the statuses to match the fake workers' answers."""
    status_lag_s: float = 15.0
    """How far back the answers an AgentWorker's status counts may date (a round, and its
    write): rounds that outlast the sync period need more."""
    sides: tuple[str, ...] = ("watch", "no-watch")
    """The sides to run (`observing_layout.side` keys), one after the other in this order."""

    @property
    def shape(self) -> FleetShape:
        return FleetShape(
            agentworkers=self.agentworkers,
            workers_per_agentworker=self.workers_per_agentworker,
            change_period_s=self.change_period_s,
        )

    def scaled(self, seconds: float) -> float:
        """A bound of `seconds` for 1,000 workers, grown with the fleet (never below)."""
        workers = self.agentworkers * self.workers_per_agentworker
        return seconds * max(1.0, workers / PER_THOUSAND)


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """What every side uses, made once for the run."""

    cfg: ObservingConfig
    client: kube.Kube
    http: aiohttp.ClientSession
    fakes: processes.Child
    stats_port: int
    proxy: ApiProxy
    workdir: Path
    profile: Path | None
    """cProfile the operator, its stats to this path with the side's key before the suffix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SideOutcome:
    """What one side saw."""

    side: Side
    samples: list[report.Sample]
    window: tuple[datetime.datetime, datetime.datetime]
    problems: list[str]
    roles: tuple[Role, ...]
    """What each operator process handled, in the samples' order."""


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def status_mismatches(
    client: kube.Kube, shape: FleetShape, pod_names: Mapping[int, str], *, lag_s: float
) -> list[str]:
    """AgentWorkers whose status does not count each worker as it answered at some moment of
    the last `lag_s` (`fake_fleet.possible_counts`: a round reads the workers one by one)."""
    now = time.time()
    moments = [now - lag for lag in range(round(lag_s) + 1)]
    wrong = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        body = await client.get(kube.agentworker_path(phantom.NAMESPACE, name)) or {}
        seen = fake_fleet.counts_of(body.get("status") or {})
        if seen not in fake_fleet.possible_counts(shape, aw, moments, pod_names):
            now_counts = fake_fleet.expected_counts(shape, aw, now, pod_names)
            wrong.append(f"{name}: status {seen}, fake workers now {now_counts}")
    return wrong


async def blank_counts(client: kube.Kube, shape: FleetShape) -> None:
    """Remove the worker counts from every AgentWorker's status (a merge patch of nulls)."""
    blank = dict.fromkeys(COUNT_FIELDS)
    for aw in range(shape.agentworkers):
        path = kube.agentworker_path(phantom.NAMESPACE, fake_fleet.agentworker_name(aw))
        await client.patch_status(path, blank)


async def _per_worker(probes: processes.Probes) -> list[int]:
    per_worker = (await probes.stats()).get("per_worker")
    if not isinstance(per_worker, list):
        raise BenchError(f"the fake workers' /stats has no per_worker list: {per_worker!r}")
    return [n if isinstance(n, int) else 0 for n in per_worker]


def _check(children: Sequence[processes.Child]) -> None:
    for child in children:
        child.check()


@dataclass(frozen=True, slots=True, kw_only=True)
class Verified:
    """How a side's start-up ended."""

    shards: list[int]
    """The shard each process holds, in process order."""
    restarts: list[str]
    """The processes that exited during start-up and were started again, and why."""


async def _restart_exited(operators: Sequence[processes.Child], restarts: list[str]) -> None:
    """Start again, as its pod would be, an operator that exited before its side's window
    (`restarts`: what happened so far, appended to); ChildFailed after MAX_RESTARTS of one."""
    for operator in operators:
        if not operator.exited:
            continue
        mine = [r for r in restarts if r.startswith(f"{operator.name} ")]
        if len(mine) >= MAX_RESTARTS:
            operator.check()
        assert operator.proc is not None
        why = (operator.last_lines(1) or ["(no log)"])[0][:300]
        restarts.append(
            f"{operator.name} exited with {operator.proc.returncode} during start-up and was "
            f"started again, as its pod would be; its last log line: {why}"
        )
        note(restarts[-1])
        await operator.restart()


async def verify(
    shared: Shared,
    probes: processes.Probes,
    operators: Sequence[processes.Child],
    read_before: list[int],
    pod_names: Mapping[int, str],
    expected: Mapping[int, Role],
) -> Verified:
    """Wait (bounded) until each process holds its own shard and has read exactly its
    AgentWorkers' workers (`expected`: each shard's), every status matches the answers and
    every worker was read since the side began (`read_before`: the fake workers' per-worker
    counts then; `pod_names`: which pod plays each fake worker). A process that exits
    meanwhile is started again (`_restart_exited`), and said."""
    cfg = shared.cfg
    deadline = time.monotonic() + cfg.verify_timeout_s
    wrong: list[str] = ["no status read yet"]
    unread = cfg.shape.workers
    restarts: list[str] = []
    while time.monotonic() < deadline:
        await _restart_exited(operators, restarts)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            seen = [m.seen for m in await probes.metrics()]
            wrong = layout.misplaced(expected, seen)
            wrong += await status_mismatches(
                shared.client, cfg.shape, pod_names, lag_s=cfg.status_lag_s
            )
            read = await _per_worker(probes)
            unread = sum(1 for n, m in zip(read, read_before, strict=True) if n == m)
            if not wrong and unread == 0:
                return Verified(
                    shards=[s.shard for s in seen if s.shard is not None], restarts=restarts
                )
        await asyncio.sleep(VERIFY_POLL_S)
    raise BenchError(
        f"after {cfg.verify_timeout_s:.0f}s: {unread} workers never read; the processes' split "
        "and the statuses that do not match the fake workers:\n" + "\n".join(wrong)
    )


async def measure(
    cfg: ObservingConfig,
    probes: processes.Probes,
    operators: Sequence[processes.Child],
    fakes: processes.Child,
    proxy: ApiProxy,
) -> tuple[list[report.Sample], list[Seen]]:
    """One sample every `sample_s` for `window_s`, on a fixed schedule; and what the processes'
    metrics said they handle at the last one."""
    ops = [psutil.Process(operator.pid) for operator in operators]
    fk = psutil.Process(fakes.pid)
    first, seen = await processes.sample(probes, ops, fk, proxy)
    samples = [first]
    for i in range(1, round(cfg.window_s / cfg.sample_s) + 1):
        await asyncio.sleep(max(0.0, first.t_s + i * cfg.sample_s - time.monotonic()))
        _check([*operators, fakes])
        taken, seen = await processes.sample(probes, ops, fk, proxy)
        samples.append(taken)
    return samples, seen


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def operator_log_problems(lines: list[str]) -> list[str]:
    """The operator's WARNING and ERROR lines (it runs at --log-level=WARNING), first ten."""
    return [f"operator log: {line[:300]}" for line in lines[:10]] + (
        [f"operator log: ... {len(lines) - 10} more lines"] if len(lines) > 10 else []
    )


def _relisted(line: str) -> tuple[bool, datetime.datetime | None]:
    """Whether the operator's log line says it listed the pods again, and when (None when its
    time does not parse)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False, None
    if not isinstance(record, dict) or not str(record.get("message", "")).startswith(RELIST):
        return False, None
    try:
        when = datetime.datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return True, None
    return True, when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def relists_in_window(
    lines: Iterable[str], window: tuple[datetime.datetime, datetime.datetime]
) -> list[str]:
    """A problem for each time the operator listed the pods again in the window (or at a time
    its line does not tell): the pods are the Deployments' own, so that its pod watch and
    their status.replicas agree, and it must never have to."""
    found = []
    for line in lines:
        relisted, when = _relisted(line)
        if relisted and (when is None or window[0] <= when <= window[1]):
            found.append(f"{RELISTED}: {line[:300]}")
    return found


def _operator(
    shared: Shared, key: str, *, metrics_port: int, side: Side | None = None
) -> processes.Child:
    """An operator process watching the benchmark's namespace, its identity bench-`key`, its
    log in operator-`key`.log. A side's (with its arguments, profiled when asked) talks to the
    API server through the counting proxy. Without a side (the one that makes the pods, not
    measured) it talks to the API server directly and holds its Lease for
    UNMEASURED_LEASE_S: while thousands of pods are made the benchmark's process (the proxy)
    and the API server are busy, and a late renewal would stop it."""
    cfg = shared.cfg
    proxied = {"KUBECONFIG": str(shared.proxy.kubeconfig)} if side is not None else {}
    return processes.Child(
        name=f"agent-operator ({key})",
        argv=processes.operator_argv(
            namespace=phantom.NAMESPACE,
            sync_period_s=cfg.sync_period_s,
            metrics_port=metrics_port,
            profile=None if side is None else _profile_path(shared.profile, key),
            identity=f"bench-{key}",
            extra_args=(f"--lease-duration={UNMEASURED_LEASE_S:g}",)
            if side is None
            else side.operator_args,
        ),
        log_path=shared.workdir / f"operator-{key}.log",
        env={**os.environ, **proxied},
    )


def _profile_path(profile: Path | None, key: str) -> Path | None:
    return None if profile is None else profile.with_stem(f"{profile.stem}-{key}")


async def make_pods(shared: Shared) -> dict[str, phantom_kubelet.Placed]:
    """Run an operator, not measured, until the Deployments it makes have every pod running
    (started by the phantom node's kubelet) and counted in their status; stop it. The pods
    started, by uid. Its log is no problem of the run: while the pods are made, a fleet with
    no worker ready yet is a warning, and its pod watch running ahead of the Deployments'
    status has it list the pods again; a note counts them."""
    operator = _operator(shared, "making-pods", metrics_port=free_port())
    try:
        await operator.start()
        note("an operator (not measured) makes the Deployments; starting their pods")
        placed = await phantom_kubelet.start_pods(
            shared.client,
            shared.cfg.shape,
            check=operator.check,
            timeout_s=shared.cfg.scaled(phantom_kubelet.START_TIMEOUT_S),
            poll_s=min(MAX_POLL_S, shared.cfg.scaled(phantom_kubelet.POLL_S)),
        )
        note(f"{len(placed)} pods running; waiting until their Deployments count them")
        await phantom.wait_settled(
            shared.client, shared.cfg.shape, timeout_s=shared.cfg.scaled(phantom.WAIT_S)
        )
        operator.check()
    finally:
        await operator.stop()
    lines = log_lines(operator.log_path)
    relisted = sum(1 for line in lines if _relisted(line)[0])
    note(
        f"pods made; that operator logged {len(lines)} warnings, {relisted} of them listings of "
        f"the pods again ({operator.log_path})"
    )
    return placed


def _keys(side: Side) -> list[str]:
    """Each process's key (its identity, log and profile): the side's, then -0, -1, ... when
    it runs several."""
    return [side.key] if side.processes == 1 else [f"{side.key}-{i}" for i in range(side.processes)]


async def run_side(shared: Shared, side: Side, pod_names: Mapping[int, str]) -> SideOutcome:
    """Blank the counts, start this side's operator processes, verify, settle, measure, stop
    them. `pod_names`: which pod plays each fake worker (index -> name)."""
    cfg = shared.cfg
    await blank_counts(shared.client, cfg.shape)
    keys = _keys(side)
    ports = [free_port() for _ in keys]
    operators = [
        _operator(shared, key, metrics_port=port, side=side)
        for key, port in zip(keys, ports, strict=True)
    ]
    probes = processes.Probes(
        shared.http,
        metrics_ports=ports,
        stats_port=shared.stats_port,
        namespace=phantom.NAMESPACE,
        shards=side.shards,
    )
    expected = layout.roles(cfg.shape, phantom.NAMESPACE, side.shards)
    try:
        read_before = await _per_worker(probes)
        for operator in operators:
            await operator.start()
        note(f"{side.key}: {len(operators)} operator(s) started; waiting for the statuses")
        verified = await verify(shared, probes, operators, read_before, pod_names, expected)
        shards = verified.shards
        timing = f"settling {cfg.settle_s:.0f}s, then measuring {cfg.window_s:.0f}s"
        note(f"{side.key}: statuses match, shards {shards}; {timing}")
        await asyncio.sleep(cfg.settle_s)
        _check(operators)
        window_start = utc_now()
        samples, seen = await measure(cfg, probes, operators, shared.fakes, shared.proxy)
        window = (window_start, utc_now())
        mismatches = await status_mismatches(
            shared.client, cfg.shape, pod_names, lag_s=cfg.status_lag_s
        )
        mismatches += layout.misplaced(expected, seen)
        if [s.shard for s in seen] != shards:
            mismatches.append(f"shards held {[s.shard for s in seen]}, {shards} before it")
        problems = [f"{side.key}: {r}" for r in verified.restarts]
        problems += [f"{side.key}: after the window: {m}" for m in mismatches]
    finally:
        await asyncio.gather(*(operator.stop() for operator in operators))
    for key, operator in zip(keys, operators, strict=True):
        lines = log_lines(operator.log_path)
        found = relists_in_window(lines, window) + operator_log_problems(lines)
        problems += [f"{key}: {p}" for p in found]
    return SideOutcome(
        side=side,
        samples=samples,
        window=window,
        problems=problems,
        roles=tuple(layout.by_process(expected, shards)),
    )
