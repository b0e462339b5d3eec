"""The plan of the observing benchmark's fake workers: who they are and what each one answers.

This module owns the fleet plan shared by the fake worker server (`bench.fake_workers`) and the
benchmark (`bench.observing`): worker i's loopback address (127.77.x.y, outside the rig runner's
127.0.x.y pod addresses), its AgentWorker, its kind, and its answer to GET /worker at a given
time: a document of this runtime's real shape (`worker_runtime.http_api.
worker_document`), the official livekit-agents subset, or a fault (not JSON, JSON that is no
worker document, HTTP 503, no answer in time). It also gives the counts an AgentWorker's status
must show for those answers, worked out here on their own, not with the operator's code. Which
pod plays worker i is not planned: the Deployments make the pods, and the phantom node's
kubelet (`bench.phantom_kubelet`) gives each the address of one of its AgentWorker's workers.

Most workers answer the same document all run long; a few ("changing") draw a new number of
calls once per `change_period_s`, each at its own phase, so calls start and end all the time
without a burst. The workers that play this runtime (`streams`) also serve its change stream:
their `snapshot` is what `worker_runtime.http_api.Changes` counts generations of, and the fake
worker server stamps the generation and instance on their documents as the runtime does. Pure:
no I/O and no clock (the time is an argument), so both processes compute the same answers.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker_runtime import http_api, protocol
from worker_runtime.options import WorkerType
from worker_runtime.state import WorkerState

PORT = 8081
"""The port the operator reads /worker on (agentworker_operator.builders.HTTP_PORT)."""
LOAD_THRESHOLD = 0.7
"""spec.loadThreshold of the benchmark's AgentWorkers, and the workers' own threshold."""
FAULT_HOLD_S = 10.0
"""How long a TIMEOUT worker holds its answer: longer than the operator's scrape timeout (2 s)."""
OFFICIAL_KEYS = (
    "agent_name",
    "worker_type",
    "active_jobs",
    "sdk_version",
    "worker_load",
    "protocol_version",
    "project_type",
)
"""The keys livekit-agents' own /worker has (it leaves out a key whose value is zero)."""


class Kind(enum.StrEnum):
    """What a fake worker is like; the faults make up 1% of the fleet. Idle, busy, changing and
    draining workers play this runtime, change stream included; the others serve no stream."""

    IDLE = "idle"
    BUSY = "busy"
    """One to three calls, for the whole run."""
    CHANGING = "changing"
    """Zero to three calls, drawn again once per change period."""
    DRAINING = "draining"
    """Draining with one call (never zero: the operator deletes a retired worker without calls)."""
    OFFICIAL = "official"
    """The official livekit-agents worker's document, idle or busy (it has no change stream)."""
    TIMEOUT = "timeout"
    GARBAGE = "garbage"
    """HTTP 200 with an HTML page."""
    NOT_A_DOCUMENT = "not-a-document"
    """HTTP 200 with JSON that is not a worker document."""
    HTTP_ERROR = "http-error"


FAULTS = (Kind.TIMEOUT, Kind.GARBAGE, Kind.HTTP_ERROR, Kind.NOT_A_DOCUMENT)
STREAMING = (Kind.IDLE, Kind.BUSY, Kind.CHANGING, Kind.DRAINING)
"""The kinds that serve this runtime's change stream (`GET /worker?after=`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetShape:
    """How many fake workers there are, and how they change."""

    agentworkers: int = 10
    """AgentWorkers in the benchmark namespace."""
    workers_per_agentworker: int = 100
    """Pods (fake workers) of each AgentWorker."""
    change_period_s: float = 60.0
    """Seconds between two draws of a changing worker's calls."""
    seed: int = 7
    """Seed of every random choice, so both processes agree."""

    @property
    def workers(self) -> int:
        return self.agentworkers * self.workers_per_agentworker


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One HTTP answer to GET /worker."""

    status: int
    body: bytes
    content_type: str
    delay_s: float = 0.0
    """Seconds to wait before answering."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """What a worker that answers is doing: its calls, its load, whether it drains."""

    jobs: int
    load: float
    draining: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedCounts:
    """The worker counts an AgentWorker's status must show."""

    available: int = 0
    full: int = 0
    draining: int = 0
    unknown: int = 0
    starting: int = 0
    active_jobs: int = 0
    """activeJobs."""
    unknown_workers: tuple[str, ...] = ()
    """unknownWorkers: the first ten, sorted."""


def address(index: int) -> str:
    """Worker `index`'s loopback address: 127.77.0.1 ... 127.77.3.250 for 1,000 workers."""
    return f"127.77.{index // 250}.{index % 250 + 1}"


def agentworker_name(aw: int) -> str:
    return f"observe-{aw}"


@functools.cache
def kind(shape: FleetShape, index: int) -> Kind:
    """Per 100 workers: one fault, one draining, two official, five changing, the rest drawn."""
    aw, k = divmod(index, shape.workers_per_agentworker)
    if k % 100 == 37:
        return FAULTS[aw % len(FAULTS)]
    if k % 100 == 73:
        return Kind.DRAINING
    if k % 50 == 11:
        return Kind.OFFICIAL
    if k % 20 == 3:
        return Kind.CHANGING
    return Kind.BUSY if _rng(shape, index, "kind").random() < 0.25 else Kind.IDLE


def _rng(shape: FleetShape, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (shape.seed, *parts)))


def _calls(rng: random.Random, jobs: int) -> Activity:
    """`jobs` calls and a load to match: under 0.1 idle, a quarter per call (3 calls: full)."""
    load = min(1.0, jobs * 0.25 + rng.uniform(0.0, 0.1)) if jobs else rng.uniform(0.0, 0.1)
    return Activity(jobs=jobs, load=round(load, 3))


@functools.cache
def _phase(shape: FleetShape, index: int) -> float:
    return _rng(shape, index, "phase").uniform(0.0, shape.change_period_s)


def epoch(shape: FleetShape, index: int, now: float) -> int:
    """Which draw a changing worker is on at Unix time `now` (0 for every other kind)."""
    if kind(shape, index) is not Kind.CHANGING:
        return 0
    return math.floor((now + _phase(shape, index)) / shape.change_period_s)


def _draw_start(shape: FleetShape, index: int, draw: int) -> float:
    """Unix time the draw began: when its calls started (a fixed time for the other kinds)."""
    if kind(shape, index) is not Kind.CHANGING:
        return 1_700_000_000.0
    return draw * shape.change_period_s - _phase(shape, index)


def next_draw_at(shape: FleetShape, index: int, now: float) -> float | None:
    """Unix time a changing worker's next draw begins after `now`; None for the other kinds,
    whose answer never changes."""
    if kind(shape, index) is not Kind.CHANGING:
        return None
    return _draw_start(shape, index, epoch(shape, index, now) + 1)


@functools.cache
def changing(shape: FleetShape, aw: int) -> tuple[int, ...]:
    """The changing workers of AgentWorker `aw`."""
    per = shape.workers_per_agentworker
    return tuple(i for i in range(aw * per, (aw + 1) * per) if kind(shape, i) is Kind.CHANGING)


def streams(shape: FleetShape, index: int) -> bool:
    """Whether worker `index` serves the change stream (the official worker and faults do not)."""
    return kind(shape, index) in STREAMING


@functools.cache
def activity(shape: FleetShape, index: int, draw: int) -> Activity | None:
    """What worker `index` does in draw `draw`; None for a fault (it answers no document).
    Cached: the benchmark checks thousands of workers' statuses against it every 2 s."""
    what = kind(shape, index)
    rng = _rng(shape, index)
    if what in FAULTS:
        return None
    if what is Kind.DRAINING:
        return Activity(jobs=1, load=0.3, draining=True)
    if what is Kind.CHANGING:
        drawn = _rng(shape, index, draw)
        return _calls(drawn, drawn.choice((0, 0, 1, 2, 3)))
    if what is Kind.IDLE or (what is Kind.OFFICIAL and rng.random() < 0.5):
        return _calls(rng, 0)
    return _calls(rng, rng.randint(1, 3))


def snapshot(shape: FleetShape, index: int, draw: int, doing: Activity) -> http_api.WorkerSnapshot:
    """What this runtime would report of itself while doing `doing`: the source of its /worker
    document and of its change stream's generation (`http_api.Changes.observe`)."""
    if doing.draining:
        state = WorkerState.DRAINING
    else:
        state = WorkerState.FULL if doing.load > LOAD_THRESHOLD else WorkerState.AVAILABLE
    jobs = tuple(
        http_api.JobSummary(
            id=f"AJ_bench_{index}_{draw}_{n}",
            room=f"bench-room-{index}-{draw}-{n}",
            started_at=_draw_start(shape, index, draw),
        )
        for n in range(doing.jobs)
    )
    return http_api.WorkerSnapshot(
        worker_id=f"AW_bench{index:04d}",
        state=state.value,
        ready=True,
        draining=doing.draining,
        agent_name=agentworker_name(index // shape.workers_per_agentworker),
        worker_type=protocol.job_type_name(WorkerType.ROOM),
        load=doing.load,
        load_threshold=LOAD_THRESHOLD,
        jobs=jobs,
        idle_processes=0 if doing.jobs else 1,
        retired=False,
        sdk_version="0.1.0",
        protocol_version=protocol.PROTOCOL_VERSION,
    )


def document(shape: FleetShape, index: int, draw: int, doing: Activity) -> dict[str, object]:
    """This runtime's /worker document for a worker doing `doing`, without the stream's stamp."""
    return http_api.worker_document(snapshot(shape, index, draw, doing))


def official_document(full: dict[str, object]) -> dict[str, object]:
    """The livekit-agents subset of a document, without the keys whose value is zero."""
    return {k: full[k] for k in OFFICIAL_KEYS if full[k] not in (0, 0.0)}


def stream_snapshot(shape: FleetShape, index: int, draw: int) -> http_api.WorkerSnapshot | None:
    """The snapshot a worker that serves the change stream shows in draw `draw`; None for the
    others."""
    doing = activity(shape, index, draw)
    if doing is None or not streams(shape, index):
        return None
    return snapshot(shape, index, draw, doing)


def answer(
    shape: FleetShape, index: int, draw: int, *, stamp: Mapping[str, object] | None = None
) -> Answer:
    """Worker `index`'s answer to GET /worker in draw `draw` (see `epoch`). `stamp`, the change
    stream's `generation` and `instance`, ends a streaming worker's document, as the runtime's
    route adds them to `worker_document`; the other kinds never show it."""
    what = kind(shape, index)
    doing = activity(shape, index, draw)
    if what is Kind.GARBAGE:
        return Answer(
            status=200, body=b"<html><body>It works!</body></html>", content_type="text/html"
        )
    if what is Kind.NOT_A_DOCUMENT:
        return _json(200, {"status": "ok", "uptime_s": 12345})
    if what is Kind.HTTP_ERROR:
        return Answer(status=503, body=b"not ready: starting", content_type="text/plain")
    if doing is None:  # TIMEOUT: an idle worker's document, but too late for the operator
        idle = document(shape, index, draw, Activity(jobs=0, load=0.0))
        return _json(200, idle, delay_s=FAULT_HOLD_S)
    full = document(shape, index, draw, doing)
    if what is Kind.OFFICIAL:
        return _json(200, official_document(full))
    return _json(200, full | dict(stamp or {}))


def _json(status: int, body: object, *, delay_s: float = 0.0) -> Answer:
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return Answer(status=status, body=encoded, content_type="application/json", delay_s=delay_s)


Tally = tuple[int, int, int, int, int]
"""Counts of workers: available, full, draining, unknown, and their jobs (calls)."""


def _tally(doing: Activity | None) -> Tally:
    """One worker's share of its AgentWorker's counts (None: a fault, counted unknown)."""
    if doing is None:
        return (0, 0, 0, 1, 0)
    if doing.draining:
        return (0, 0, 1, 0, doing.jobs)
    full = doing.load > LOAD_THRESHOLD
    return (0 if full else 1, 1 if full else 0, 0, 0, doing.jobs)


def _add(a: Tally, b: Tally) -> Tally:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def _counts(total: Tally, unknown: tuple[str, ...]) -> ExpectedCounts:
    available, full, draining, faults, jobs = total
    return ExpectedCounts(
        available=available,
        full=full,
        draining=draining,
        unknown=faults,
        active_jobs=jobs,
        unknown_workers=unknown,
    )


def _unknown_names(shape: FleetShape, aw: int, pod_names: Mapping[int, str]) -> tuple[str, ...]:
    """unknownWorkers: the pods of the faults (whose answers never change), first ten sorted."""
    per = shape.workers_per_agentworker
    names = [
        pod_names.get(i, f"(no pod plays worker {i})")
        for i in range(aw * per, (aw + 1) * per)
        if kind(shape, i) in FAULTS
    ]
    return tuple(sorted(names)[:10])


def expected_counts(
    shape: FleetShape, aw: int, now: float, pod_names: Mapping[int, str]
) -> ExpectedCounts:
    """What AgentWorker `aw`'s status must count for the answers served at Unix time `now`;
    `pod_names`: which pod plays each worker (index -> name), for unknownWorkers."""
    per = shape.workers_per_agentworker
    total: Tally = (0, 0, 0, 0, 0)
    for index in range(aw * per, (aw + 1) * per):
        total = _add(total, _tally(activity(shape, index, epoch(shape, index, now))))
    return _counts(total, _unknown_names(shape, aw, pod_names))


def possible_counts(
    shape: FleetShape, aw: int, moments: Sequence[float], pod_names: Mapping[int, str]
) -> set[ExpectedCounts]:
    """Every count AgentWorker `aw`'s status may show when each of its workers is counted as it
    answered at one of `moments` (Unix times), not necessarily the same one: the operator reads
    the workers one by one over a round, and hears a changing worker's news between rounds.
    The workers that never change count as they always answer; each changing worker as in
    any of the draws it was on at those moments."""
    per = shape.workers_per_agentworker
    moving = set(changing(shape, aw))
    fixed: Tally = (0, 0, 0, 0, 0)
    for index in range(aw * per, (aw + 1) * per):
        if index not in moving:
            fixed = _add(fixed, _tally(activity(shape, index, 0)))
    totals = {fixed}
    for index in moving:
        draws = {epoch(shape, index, t) for t in moments}
        shares = {_tally(activity(shape, index, draw)) for draw in draws}
        totals = {_add(total, share) for total in totals for share in shares}
    unknown = _unknown_names(shape, aw, pod_names)
    return {_counts(total, unknown) for total in totals}


def counts_of(status: dict[str, object]) -> ExpectedCounts:
    """The same counts, as an AgentWorker's status shows them (missing ones as zero)."""

    def number(key: str) -> int:
        value = status.get(key)
        return value if isinstance(value, int) else 0

    listed = status.get("unknownWorkers")
    return ExpectedCounts(
        available=number("available"),
        full=number("full"),
        draining=number("draining"),
        unknown=number("unknown"),
        starting=number("starting"),
        active_jobs=number("activeJobs"),
        unknown_workers=tuple(str(n) for n in listed) if isinstance(listed, list) else (),
    )
