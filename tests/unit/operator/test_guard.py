"""The dispatch guard: which dispatches without a job to hold, re-issue, give up or let go, and
the fleet's free slots; then a seeded simulation of a LiveKit server that drops dispatches, with
the guard's invariants checked after every round."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from agentworker_operator import guard, observation
from agentworker_operator.guard import JobStatus, Stage
from agentworker_operator.observation import WorkerState
from agentworker_operator.redact import room_ref
from tests.unit.operator.workers import THRESHOLD, worker

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

AGENT = "support"
NOW = 1000.0
WALL = 1_700_000_000.0
"""The wall clock at NOW: the server's timestamps are wall seconds."""
MAX_WAIT_S = 120.0


def dispatch(
    id: str = "AD_1",
    *,
    age_s: float = 30.0,
    jobs: Sequence[guard.Job] = (),
    agent_name: str = AGENT,
    metadata: str = '{"phone": "+15550100"}',
) -> guard.Dispatch:
    return guard.Dispatch(
        id=id,
        agent_name=agent_name,
        metadata=metadata,
        deployment="blue",
        attributes=(("tier", "gold"),),
        restart_policy=guard.RestartPolicy.NEVER,
        created_at_s=WALL - age_s,
        jobs=tuple(jobs),
    )


def job(
    status: JobStatus = JobStatus.RUNNING, *, age_s: float = 60.0, identity: str = "agent-AJ_1"
) -> guard.Job:
    return guard.Job(
        id="AJ_1", status=status, participant_identity=identity, started_at_s=WALL - age_s
    )


def room(
    name: str = "r1",
    *,
    callers: int = 1,
    agents: Sequence[guard.Agent] = (),
    dispatches: Sequence[guard.Dispatch] | None = None,
) -> guard.Room:
    listed = (dispatch(),) if dispatches is None else tuple(dispatches)
    return guard.Room(name=name, callers=callers, agents=tuple(agents), dispatches=listed)


def judge(
    rooms: Sequence[guard.Room],
    held: Mapping[str, guard.Held] | None = None,
    *,
    free: int = 1,
    at: float = NOW,
    served: frozenset[str] = frozenset(),
    unread: frozenset[str] = frozenset(),
) -> guard.Plan:
    """A round at monotonic time `at` (the wall clock moves with it)."""
    return guard.judge(
        rooms,
        held or {},
        agent_name=AGENT,
        served_rooms=served,
        free_slots=free,
        now_s=at,
        wall_now_s=WALL + (at - NOW),
        max_wait_s=MAX_WAIT_S,
        unread=unread,
    )


def reissued(plan: guard.Plan) -> list[str]:
    return [r.room for r in plan.reissue]


# ---------------------------------------------------------------------------------------------
# Holding and re-issuing
# ---------------------------------------------------------------------------------------------


def test_a_dropped_dispatch_is_reissued_with_everything_its_creator_gave() -> None:
    plan = judge([room()])
    [reissue] = plan.reissue
    assert reissue.room == "r1"
    assert reissue.dispatch == dispatch()  # metadata, deployment, attributes, restart policy
    assert reissue.delete_ids == ("AD_1",)
    assert (reissue.attempt, reissue.waited_s) == (1, 30.0)
    assert plan.held["r1"].attempts == 1
    assert plan.held["r1"].last_issued_s == NOW
    assert plan.pending == 1  # until its agent comes: the re-issue takes a free slot


def test_a_dispatch_younger_than_the_grace_is_remembered_but_neither_reissued_nor_demand() -> None:
    # the server may be assigning it right now
    plan = judge([room(dispatches=[dispatch(age_s=guard.GRACE_S - 1)])])
    assert plan.reissue == ()
    assert plan.pending == 0
    assert plan.held["r1"].stage is Stage.WAITING


def test_without_a_free_slot_the_dispatch_is_held_as_demand() -> None:
    plan = judge([room()], free=0)
    assert plan.reissue == ()
    assert plan.pending == 1
    assert plan.held["r1"].attempts == 0


@pytest.mark.parametrize(
    ("agents", "dispatches", "served"),
    [
        pytest.param([guard.Agent(identity="a", agent_name=AGENT)], None, False, id="our-agent"),
        pytest.param([guard.Agent(identity="a")], None, False, id="agent-without-a-name"),
        pytest.param(
            [guard.Agent(identity="agent-AJ_1", agent_name="renamed")],
            [dispatch(), dispatch("AD_2", jobs=[job()])],
            False,
            id="the-agent-of-our-job",
        ),
        pytest.param([], None, True, id="a-worker-reports-the-room"),
        pytest.param(
            [], [dispatch(), dispatch("AD_2", jobs=[job(JobStatus.PENDING)])], False, id="pending"
        ),
        pytest.param(
            [],
            [dispatch(), dispatch("AD_2", jobs=[job(age_s=guard.SETTLE_S - 1)])],
            False,
            id="a-job-whose-agent-is-joining",
        ),
    ],
)
def test_a_room_an_agent_of_ours_serves_or_joins_is_never_reissued_into(
    agents: list[guard.Agent], dispatches: list[guard.Dispatch] | None, served: bool
) -> None:
    rooms = [room(agents=agents, dispatches=dispatches)]
    plan = judge(rooms, free=5, served=frozenset({"r1"} if served else ()))
    assert plan.reissue == ()
    assert plan.pending == 0
    assert plan.held["r1"].stage is Stage.SERVED  # its jobless record is left alone


def test_another_agents_participant_does_not_serve_the_room() -> None:
    plan = judge([room(agents=[guard.Agent(identity="t", agent_name="transcriber")])])
    assert reissued(plan) == ["r1"]


@pytest.mark.parametrize(
    "status", [JobStatus.RUNNING, JobStatus.SUCCESS, JobStatus.FAILED], ids=lambda s: s.name
)
def test_a_dispatch_whose_job_ran_is_left_alone(status: JobStatus) -> None:
    # the server never updates a job after its assignment: RUNNING may have ended long ago
    plan = judge([room(dispatches=[dispatch(jobs=[job(status)])])], free=5)
    assert plan == guard.Plan(reissue=(), give_up=(), dropped=(), served=(), held={}, pending=0)


def test_a_jobless_dispatch_beside_a_job_that_ended_is_reissued() -> None:
    # e.g. call recovery dispatched again after the agent died, and no worker took it
    old = dispatch("AD_1", age_s=300, jobs=[job(age_s=290)])
    plan = judge([room(dispatches=[old, dispatch("AD_2")])])
    assert [r.delete_ids for r in plan.reissue] == [("AD_2",)]


def test_other_agents_dispatches_are_ignored() -> None:
    # every room the server creates has a dispatch for agent name "" (automatic dispatch)
    others = [dispatch("AD_0", agent_name=""), dispatch("AD_9", agent_name="transcriber")]
    assert judge([room(dispatches=others)], free=5).held == {}
    plan = judge([room(dispatches=[*others, dispatch()])], free=5)
    assert [r.delete_ids for r in plan.reissue] == [("AD_1",)]


def test_all_jobless_records_of_ours_are_deleted_and_the_oldest_is_created_again() -> None:
    records = [dispatch("AD_2", age_s=10, metadata="b"), dispatch("AD_1", age_s=40, metadata="a")]
    [reissue] = judge([room(dispatches=records)]).reissue
    assert reissue.delete_ids == ("AD_1", "AD_2")
    assert reissue.dispatch.metadata == "a"


def test_a_room_with_a_jobless_record_younger_than_the_grace_waits_for_it() -> None:
    records = [dispatch("AD_1", age_s=60), dispatch("AD_2", age_s=1)]
    plan = judge([room(dispatches=records)])
    assert plan.reissue == ()
    assert plan.pending == 1


def test_the_oldest_dispatches_are_reissued_first_within_the_free_slots() -> None:
    rooms = [room(f"r{age}", dispatches=[dispatch(f"AD_{age}", age_s=age)]) for age in (20, 90, 50)]
    plan = judge(rooms, free=2)
    assert reissued(plan) == ["r90", "r50"]
    assert plan.pending == 3


def test_negative_free_slots_reissue_nothing() -> None:
    assert judge([room()], free=-1).reissue == ()


def test_a_reissue_settles_before_the_room_is_judged_again() -> None:
    first = judge([room()])
    again = [room(dispatches=[dispatch("AD_2", age_s=0)])]  # dropped again: still no worker
    within = judge(again, first.held, at=NOW + guard.SETTLE_S - 1, free=3)
    assert within.reissue == ()
    assert within.pending == 1
    later = [room(dispatches=[dispatch("AD_2", age_s=guard.SETTLE_S)])]
    after = judge(later, within.held, at=NOW + guard.SETTLE_S, free=3)
    [reissue] = after.reissue
    assert (reissue.attempt, reissue.delete_ids) == (2, ("AD_2",))
    assert reissue.dispatch.metadata == dispatch().metadata


def test_reissues_in_flight_take_the_free_slots_the_workers_still_report() -> None:
    first = judge([room("r1")], free=1)
    rooms = [room("r1", dispatches=[dispatch("AD_2", age_s=0)]), room("r2")]
    second = judge(rooms, first.held, at=NOW + 1, free=1)  # the worker has not reported r1 yet
    assert second.reissue == ()
    assert second.pending == 2


def test_the_wait_counts_from_the_dispatchs_creation_not_from_the_first_look() -> None:
    plan = judge([room(dispatches=[dispatch(age_s=MAX_WAIT_S + 1)])])  # e.g. after a restart
    assert plan.reissue == ()
    assert [r.reason for r in plan.give_up] == ["NoWorkerInTime"]


def test_a_dispatch_is_given_up_after_max_wait_then_left_alone() -> None:
    first = judge([room()], free=0)
    at = NOW + MAX_WAIT_S - 30 + 0.5  # the dispatch was 30 s old at NOW
    plan = judge([room(dispatches=[dispatch(age_s=30 + at - NOW)])], first.held, at=at, free=5)
    [gave_up] = plan.give_up
    assert gave_up.room == "r1"
    taken = f"no worker took the dispatch of support into {room_ref('r1')} within 120s"
    assert taken in gave_up.message
    assert "r1" not in gave_up.message.replace(room_ref("r1"), ""), "no room name in an Event"
    assert plan.reissue == ()
    assert plan.pending == 0
    assert plan.held["r1"].stage is Stage.GAVE_UP
    later = judge([room(dispatches=[dispatch(age_s=300)])], plan.held, at=at + 5, free=5)
    assert (later.give_up, later.reissue) == ((), ())  # one Event, not one a round
    assert judge([room(dispatches=[])], later.held, at=at + 10).held == {}


def test_a_room_whose_caller_left_is_dropped_and_not_taken_for_an_outbound_call() -> None:
    first = judge([room(callers=1)], free=0)
    plan = judge([room(callers=0)], first.held, at=NOW + 5, free=5)
    assert [r.reason for r in plan.dropped] == ["CallerLeft"]
    assert plan.reissue == ()
    assert plan.held["r1"].stage is Stage.CALLER_LEFT
    later = judge([room(callers=0)], plan.held, at=NOW + 10, free=5)
    assert (later.reissue, later.dropped, later.pending) == ((), (), 0)


def test_an_empty_room_that_never_had_a_caller_is_served_for_an_outbound_call() -> None:
    plan = judge([room(callers=0)])
    assert reissued(plan) == ["r1"]
    assert plan.held["r1"].had_caller is False


def test_a_room_first_seen_empty_after_a_callers_webhook_is_not_taken_for_outbound() -> None:
    told = dataclasses.replace(room(callers=0), had_caller=True)
    plan = judge([told], free=5)
    assert [r.reason for r in plan.dropped] == ["CallerLeft"]
    assert plan.reissue == ()


def test_a_room_that_ended_is_dropped_and_forgotten() -> None:
    first = judge([room()], free=0)
    plan = judge([], first.held, at=NOW + 5)
    [dropped] = plan.dropped
    assert (dropped.reason, dropped.room) == ("RoomEnded", "r1")
    assert f"{room_ref('r1')} ended before an agent of support came" in dropped.message
    assert plan.held == {}


def test_a_dispatch_deleted_by_someone_else_is_dropped() -> None:
    first = judge([room()], free=0)
    plan = judge([room(dispatches=[])], first.held, at=NOW + 5)
    assert [r.reason for r in plan.dropped] == ["DispatchDeleted"]
    assert plan.held == {}


def test_a_reissue_whose_create_failed_is_created_again_without_deleting() -> None:
    first = judge([room()])
    # the delete went through, the create did not: the guard still owes the room its dispatch
    plan = judge([room(dispatches=[])], first.held, at=NOW + guard.SETTLE_S, free=1)
    [reissue] = plan.reissue
    assert (reissue.attempt, reissue.delete_ids, reissue.dispatch) == (2, (), dispatch())


def test_a_reissued_dispatch_that_got_its_agent_is_served_and_forgotten() -> None:
    first = judge([room()])
    served = room(dispatches=[dispatch("AD_2", age_s=1, jobs=[job(age_s=1)])])
    plan = judge([served], first.held, at=NOW + 2)
    [release] = plan.served
    assert (release.reason, release.attempts) == ("DispatchServed", 1)
    assert plan.held == {}
    assert plan.pending == 0


def test_an_unread_room_keeps_its_memory_and_its_place_in_the_demand() -> None:
    first = judge([room()], free=0)
    plan = judge([room()], first.held, at=NOW + 5, free=5, unread=frozenset({"r1"}))
    assert plan.reissue == ()
    assert plan.held == first.held
    assert plan.pending == 1
    late = judge([], plan.held, at=NOW + MAX_WAIT_S, unread=frozenset({"r1"}))
    assert [r.reason for r in late.give_up] == ["NoWorkerInTime"]


# ---------------------------------------------------------------------------------------------
# Free slots
# ---------------------------------------------------------------------------------------------


def reporting(load: float, jobs: int, *, own_threshold: float | None = None) -> observation.Worker:
    w = worker("w", load=load, jobs=jobs)
    if own_threshold is None:
        return w
    assert w.report is not None
    report = dataclasses.replace(w.report, load_threshold=own_threshold)
    state = observation.classify(w.pod, report, load_threshold=THRESHOLD)
    return dataclasses.replace(w, report=report, state=state)


@pytest.mark.parametrize(
    ("w", "job_load", "expected"),
    [
        pytest.param(reporting(0.0, 0), None, 1, id="idle-counts-one"),
        pytest.param(reporting(0.0, 0), 0.2, 3, id="idle-with-a-known-job-load"),
        pytest.param(reporting(0.2, 1), None, 2, id="room-for-two-more-rounded-down"),
        pytest.param(reporting(0.2, 1), 0.3, 1, id="the-larger-job-load-wins"),
        pytest.param(reporting(0.6, 3), None, 1, id="at-least-one-while-available"),
        pytest.param(reporting(0.1, 1, own_threshold=0.9), None, 8, id="its-own-threshold"),
        pytest.param(reporting(0.3, 0), None, 1, id="load-without-jobs"),
        pytest.param(reporting(0.8, 4), None, 0, id="full"),
        pytest.param(worker("w", state=WorkerState.DRAINING, jobs=1), None, 0, id="draining"),
        pytest.param(worker("w", state=WorkerState.UNKNOWN), None, 0, id="unknown"),
        pytest.param(worker("w", state=WorkerState.STARTING), None, 0, id="starting"),
        pytest.param(worker("w", terminating=True), None, 0, id="being-deleted"),
    ],
)
def test_free_slots_of_one_worker(
    w: observation.Worker, job_load: float | None, expected: int
) -> None:
    assert guard.free_slots([w], load_threshold=THRESHOLD, job_load=job_load) == expected


def test_free_slots_add_up_over_the_fleet() -> None:
    fleet = [reporting(0.0, 0), reporting(0.2, 1), reporting(0.8, 4)]
    assert guard.free_slots(fleet, load_threshold=THRESHOLD) == 3
    assert guard.free_slots([], load_threshold=THRESHOLD) == 0


# ---------------------------------------------------------------------------------------------
# A simulated LiveKit server, the guard judging it round after round
# ---------------------------------------------------------------------------------------------

RACE_S = guard.GRACE_S * 0.9
"""At most this long after its dispatch, an agent whose assignment missed the deadline (no job
on the record) joins anyway."""
JOIN_S = guard.SETTLE_S * 0.9
"""At most this long after its job is assigned, the agent joins."""


@dataclass
class SimRoom:
    name: str
    callers: int
    dispatches: list[guard.Dispatch] = field(default_factory=list)
    agents: dict[str, float] = field(default_factory=dict)
    """Our agents (identity -> when they join, wall seconds): joined or on their way."""
    metadata: str = ""
    had_caller: bool = False
    webhooks: bool = True
    """The operator receives this room's participant webhooks."""
    shown_caller: bool = False
    """The guard was shown that a caller was there (a count, or a webhook)."""
    ended_at: float | None = None


@dataclass
class Tally:
    reissued: int = 0
    gave_up: int = 0
    dropped: int = 0
    served: int = 0
    races: int = 0
    failed_creates: int = 0
    failed_deletes: int = 0
    redispatched: int = 0


@dataclass
class Server:
    """Rooms and a fleet with `slots` slots; a launch takes a slot or is dropped."""

    rng: random.Random
    race_rate: float = 0.1
    """How often an assignment misses its deadline while the worker runs the job anyway."""
    slots: int = 0
    max_slots: int = 6
    rooms: dict[str, SimRoom] = field(default_factory=dict)
    ids: int = 0

    def used(self) -> int:
        return sum(len(r.agents) for r in self.rooms.values())

    def free(self) -> int:
        return max(0, self.slots - self.used())

    def next_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}_{self.ids}"

    def launch(self, r: SimRoom, d: guard.Dispatch, wall: float, tally: Tally) -> guard.Dispatch:
        """The server's one try: a job and an agent, a late agent with no job, or nothing."""
        if self.free() > 0 and self.rng.random() >= self.race_rate:
            identity = self.next_id("agent-AJ")
            r.agents[identity] = wall + self.rng.uniform(0.1, JOIN_S)
            taken = guard.Job(id=identity[6:], participant_identity=identity, started_at_s=wall)
            return dataclasses.replace(d, jobs=(taken,))
        if self.free() > 0:
            # the assignment missed its deadline, yet the worker runs it: no job on the record
            tally.races += 1
            r.agents[self.next_id("agent-AJ")] = wall + self.rng.uniform(0.1, RACE_S)
        return d

    def create(self, r: SimRoom, metadata: str, wall: float, tally: Tally) -> None:
        d = guard.Dispatch(
            id=self.next_id("AD"), agent_name=AGENT, metadata=metadata, created_at_s=wall
        )
        r.dispatches.append(self.launch(r, d, wall, tally))

    def view(self, wall: float) -> list[guard.Room]:
        return [
            guard.Room(
                name=r.name,
                callers=r.callers,
                had_caller=r.had_caller and r.webhooks,
                agents=tuple(
                    guard.Agent(identity=i, agent_name=AGENT)
                    for i, joins in r.agents.items()
                    if joins <= wall
                ),
                dispatches=(*r.dispatches, guard.Dispatch(id="AD_0", agent_name="")),
            )
            for r in self.rooms.values()
        ]

    def step(self, wall: float, tally: Tally) -> None:
        """Calls arrive, callers and agents leave, rooms end, workers come and go."""
        self.slots = max(0, min(self.max_slots, self.slots + self.rng.choice((-1, 0, 0, 1))))
        for _ in range(self.rng.choice((0, 0, 1, 1, 2))):
            name = self.next_id("room")
            callers = int(self.rng.random() < 0.8)  # or an outbound call: an empty room
            r = SimRoom(name, callers, metadata=f"call {name}", had_caller=callers > 0)
            r.webhooks = self.rng.random() < 0.7
            self.rooms[name] = r
            self.create(r, r.metadata, wall, tally)
        for r in list(self.rooms.values()):
            ran = any(d.jobs for d in r.dispatches)
            if r.callers and ran and not r.agents and self.rng.random() < 0.3:
                tally.redispatched += 1  # call recovery, or the app, dispatches again
                self.create(r, r.metadata, wall, tally)
            if r.callers and self.rng.random() < 0.04:
                r.callers = 0
                r.ended_at = wall + 20.0  # the departure timeout
            for identity, joins in list(r.agents.items()):
                if joins <= wall and self.rng.random() < 0.03:
                    del r.agents[identity]  # the call ended on the agent's side
            if (r.ended_at is not None and wall >= r.ended_at) or self.rng.random() < 0.005:
                del self.rooms[r.name]


def check_round(
    seed: int,
    server: Server,
    before: Mapping[str, guard.Held],
    plan: guard.Plan,
    *,
    free: int,
    served_rooms: frozenset[str],
    unread: frozenset[str],
    now: float,
    wall: float,
    last_gap_s: float,
    grace_s: float,
) -> None:
    """The guard's invariants for one round, against the server's truth."""
    where = f"seed {seed} at {now:.1f}s"
    assert len(plan.reissue) <= max(0, free), f"{where}: more re-issues than free slots"
    assert len({r.room for r in plan.reissue}) == len(plan.reissue), f"{where}: a room twice"
    for reissue in plan.reissue:
        r = server.rooms[reissue.room]
        assert reissue.room not in unread, f"{where}: re-issued into unread {r.name}"
        assert not any(joins <= wall for joins in r.agents.values()), (
            f"{where}: re-issued into {r.name}, which has an agent"
        )
        assert reissue.room not in served_rooms, f"{where}: {r.name} is reported served"
        recent = [
            j
            for d in r.dispatches
            for j in d.jobs
            if j.status is JobStatus.PENDING or wall - j.started_at_s < guard.SETTLE_S
        ]
        assert not recent, f"{where}: re-issued into {r.name}, whose agent is joining"
        assert reissue.dispatch.metadata == r.metadata, f"{where}: metadata changed"
        assert r.callers or not r.shown_caller, f"{where}: re-issued after {r.name}'s caller left"
    assert plan.held.keys() <= server.rooms.keys(), f"{where}: memory of a room gone"
    for h in plan.held.values():
        if h.stage is Stage.WAITING:
            assert now - h.since_s <= MAX_WAIT_S, f"{where}: {h.room} waits past max_wait_s"
    for release in plan.give_up:
        assert release.waited_s <= MAX_WAIT_S + last_gap_s, f"{where}: given up late"
    for r in server.rooms.values():
        unserved = [
            d
            for d in r.dispatches
            if not d.jobs and wall - d.created_at_s >= grace_s and not r.agents
        ]
        if unserved and r.name not in served_rooms and r.name not in unread:
            assert r.name in plan.held, f"{where}: the unserved dispatch of {r.name} is lost"
    waiting = [
        h
        for h in plan.held.values()
        if h.stage is Stage.WAITING
        and (h.attempts > 0 or wall - h.dispatch.created_at_s >= grace_s)
    ]
    assert plan.pending == len(waiting), f"{where}: pending {plan.pending} != {len(waiting)}"
    in_flight = sum(
        1
        for h in plan.held.values()
        if h.stage is Stage.WAITING
        and h.last_issued_s is not None
        and now - h.last_issued_s < guard.SETTLE_S
        and h.room not in {r.room for r in plan.reissue}
    )
    if plan.reissue:  # re-issues in flight take slots: the new ones fit in what is left
        assert in_flight + len(plan.reissue) <= free, f"{where}: more in flight than free"
    idle = max(0, free - in_flight) - len(plan.reissue)
    if idle > 0:  # slots left unused: nothing was ready to go
        ready = [
            h
            for h in waiting
            if h.room not in {r.room for r in plan.reissue}
            and h.room not in unread
            and h.last_issued_s is None
            and all(wall - d.created_at_s >= grace_s for d in server.rooms[h.room].dispatches)
        ]
        assert not ready, f"{where}: {idle} slots idle while {ready[0].room} waits"


def simulate(
    seed: int,
    *,
    rounds: int = 250,
    grace_s: float = guard.GRACE_S,
    race_rate: float = 0.1,
    max_slots: int = 6,
) -> Tally:
    """`rounds` rounds of the server and the guard; AssertionError names the seed."""
    rng = random.Random(seed)
    server = Server(rng, race_rate=race_rate, slots=max_slots // 2, max_slots=max_slots)
    tally = Tally()
    held: Mapping[str, guard.Held] = {}
    now, reported = NOW, frozenset[str]()
    for _ in range(rounds):
        gap = rng.uniform(1.0, 8.0)
        now += gap
        wall = WALL + (now - NOW)
        server.step(wall, tally)
        free = server.free() + rng.choice((-1, 0, 0, 1))  # the reports lag a little
        unread = frozenset(name for name in server.rooms if rng.random() < 0.03)
        rooms = [r for r in server.view(wall) if r.name not in unread]
        for shown in rooms:
            if shown.callers or shown.had_caller:
                server.rooms[shown.name].shown_caller = True
        plan = guard.judge(
            rooms,
            held,
            agent_name=AGENT,
            served_rooms=reported,
            free_slots=free,
            now_s=now,
            wall_now_s=wall,
            max_wait_s=MAX_WAIT_S,
            grace_s=grace_s,
            unread=unread,
        )
        check_round(
            seed,
            server,
            held,
            plan,
            free=free,
            served_rooms=reported,
            unread=unread,
            now=now,
            wall=wall,
            last_gap_s=gap,
            grace_s=grace_s,
        )
        apply(server, plan, wall, tally)
        for r in server.rooms.values():
            assert len(r.agents) <= 1, f"seed {seed} at {now:.1f}s: two agents in {r.name}"
        held = plan.held
        # the workers report the jobs they took, but a worker may not answer
        reported = frozenset(
            r.name for r in server.rooms.values() if r.agents and rng.random() < 0.8
        )
        tally.gave_up += len(plan.give_up)
        tally.dropped += len(plan.dropped)
        tally.served += sum(1 for s in plan.served if s.attempts > 0)
    return tally


def apply(server: Server, plan: guard.Plan, wall: float, tally: Tally) -> None:
    """What the I/O layer does: delete the jobless records, then create the dispatch again."""
    for reissue in plan.reissue:
        r = server.rooms[reissue.room]
        tally.reissued += 1
        if server.rng.random() < 0.05:
            tally.failed_deletes += 1  # the records stay
        else:
            r.dispatches = [d for d in r.dispatches if d.id not in reissue.delete_ids]
        if server.rng.random() < 0.05:
            tally.failed_creates += 1
            continue
        server.create(r, reissue.dispatch.metadata, wall, tally)


SEEDS = range(24)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_guard_keeps_its_invariants_round_after_round(seed: int) -> None:
    simulate(seed)


def test_the_simulation_reaches_every_outcome() -> None:
    tallies = [simulate(seed, rounds=120) for seed in range(6)]
    totals = {name: sum(getattr(t, name) for t in tallies) for name in Tally.__dataclass_fields__}
    assert all(totals.values()), totals


def first_failure(*, grace_s: float) -> str:
    """The first failure over a few seeds of a server that often misses its deadline and has
    slots to spare (so a second agent can start), or ""."""
    for seed in range(8):
        try:
            simulate(seed, rounds=100, grace_s=grace_s, race_rate=0.5, max_slots=30)
        except AssertionError as failure:
            return str(failure)
    return ""


def test_the_simulation_catches_a_guard_that_does_not_wait_for_late_agents() -> None:
    # without a grace, a dispatch whose late agent is on its way is created again: two agents
    assert first_failure(grace_s=guard.GRACE_S) == ""
    failure = first_failure(grace_s=0.0)
    assert "two agents" in failure or "has an agent" in failure, failure


@pytest.mark.parametrize(
    ("loads_and_jobs", "slots"),
    [
        ((), 1),  # nothing known: one job per new worker, the safe side
        (((0.0, 0),), 1),
        (((0.5, 2),), 2),  # 0.25 a job, threshold 0.7: two for sure
        (((0.5, 2), (0.2, 1)), 2),
        (((0.1, 1),), 7),
        (((0.9, 1),), 1),  # one job past the threshold still means one
    ],
)
def test_slots_per_worker_is_the_fewest_a_busy_worker_shows(
    loads_and_jobs: tuple[tuple[float, int], ...], slots: int
) -> None:
    workers = [
        worker(f"w{i}", load=load, jobs=jobs) for i, (load, jobs) in enumerate(loads_and_jobs)
    ]
    assert guard.slots_per_worker(workers, load_threshold=THRESHOLD) == slots


def test_an_idle_worker_has_the_slots_a_busy_one_shows_a_job_costs() -> None:
    workers = [worker("busy", load=0.25, jobs=2), worker("idle")]
    share = guard.job_load(workers)
    assert share == 0.125
    # the busy one: (0.7 - 0.25) / 0.125 = 3; the idle one: 0.7 / 0.125 = 5
    assert guard.free_slots(workers, load_threshold=THRESHOLD, job_load=share) == 8
    assert guard.job_load([worker("idle")]) is None
