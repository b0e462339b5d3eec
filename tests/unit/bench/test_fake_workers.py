"""bench/fake_workers.py and bench/fake_fleet.py: the fake workers serve the runtime's change
stream (generation, instance, long polls held until a change or the wait), the official worker
and the faults do not, and plain reads and polls are counted apart. No socket: the requests go
to `FakeWorkers.respond`, and the time is a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from aiohttp import web

from bench import fake_fleet
from bench.fake_fleet import FleetShape, Kind
from bench.fake_workers import FakeWorkers, PollEnd
from worker_runtime import http_api

SHAPE = FleetShape(agentworkers=1, workers_per_agentworker=100)
START = 1_800_000_000.0
MARGIN_S = 0.01


class Clock:
    """Unix time that moves only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def first(kind: Kind) -> int:
    return next(i for i in range(SHAPE.workers) if fake_fleet.kind(SHAPE, i) is kind)


def view(index: int, now: float) -> http_api.DecisionView:
    snap = fake_fleet.stream_snapshot(SHAPE, index, fake_fleet.epoch(SHAPE, index, now))
    assert snap is not None
    return http_api.decision_view(snap)


def before_a_draw(index: int, *, changes_view: bool) -> float:
    """A time in a draw of the changing worker whose next draw does (or does not) change its
    decision view."""
    now = START
    for _ in range(1_000):
        ends = fake_fleet.next_draw_at(SHAPE, index, now)
        assert ends is not None
        if (view(index, now) != view(index, ends + MARGIN_S)) is changes_view:
            return now
        now = ends + MARGIN_S
    raise AssertionError("no such draw in 1,000")


def document(response: web.Response) -> dict[str, object]:
    assert isinstance(response.body, bytes)
    decoded: dict[str, object] = json.loads(response.body)
    return decoded


async def until_held(fleet: FakeWorkers, count: int = 1) -> None:
    for _ in range(100):
        if fleet.held == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{fleet.held} polls held, not {count}")


async def test_a_streaming_worker_stamps_generation_and_instance_on_the_runtime_document() -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    index = first(Kind.BUSY)
    got = document(await fleet.respond(index, {}))
    snap = fake_fleet.stream_snapshot(SHAPE, index, 0)
    assert snap is not None
    stamp = {"generation": 1, "instance": fleet.instance(index)}
    assert got == http_api.worker_document(snap) | stamp
    assert (fleet.plain, sum(fleet.polls.values())) == (1, 0)


@pytest.mark.parametrize("kind", [Kind.OFFICIAL, Kind.TIMEOUT], ids=["official", "timeout"])
def test_the_official_worker_and_the_faults_serve_no_stream(kind: Kind) -> None:
    index = first(kind)
    fleet = FakeWorkers(SHAPE, clock=Clock())
    assert fleet.instance(index) is None
    assert not fake_fleet.streams(SHAPE, index)


async def test_the_official_worker_ignores_after_and_answers_at_once_without_a_stamp() -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    got = document(await fleet.respond(first(Kind.OFFICIAL), {"after": "1", "wait": "25"}))
    assert "generation" not in got
    assert "instance" not in got
    assert (fleet.plain, sum(fleet.polls.values())) == (1, 0)


@pytest.mark.parametrize(
    "query",
    [{"after": "7"}, {"after": "1", "instance": "another-process"}],
    ids=["other-generation", "other-instance"],
)
async def test_a_poll_that_is_not_current_answers_at_once(query: dict[str, str]) -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    got = document(await fleet.respond(first(Kind.IDLE), query))
    assert got["generation"] == 1
    assert fleet.polls == {PollEnd.AT_ONCE: 1}
    assert fleet.plain == 0


async def test_a_current_poll_is_held_until_its_wait_runs_out_with_the_same_document() -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    index = first(Kind.IDLE)
    plain = document(await fleet.respond(index, {}))
    query = {"after": "1", "wait": "0.05", "instance": str(fleet.instance(index))}
    assert document(await fleet.respond(index, query)) == plain
    assert fleet.polls == {PollEnd.ON_WAIT: 1}
    assert fleet.held == 0


async def test_a_held_poll_answers_when_the_changing_workers_next_draw_changes_its_view() -> None:
    index = first(Kind.CHANGING)
    clock = Clock(before_a_draw(index, changes_view=True))
    fleet = FakeWorkers(SHAPE, clock=clock)
    assert document(await fleet.respond(index, {}))["generation"] == 1
    poll = asyncio.create_task(fleet.respond(index, {"after": "1", "wait": "30"}))
    await until_held(fleet)
    ends = fake_fleet.next_draw_at(SHAPE, index, clock.now)
    assert ends is not None
    clock.now = ends + MARGIN_S
    fleet.refresh()
    got = document(await asyncio.wait_for(poll, 1.0))
    assert got["generation"] == 2
    assert fleet.polls == {PollEnd.ON_CHANGE: 1}


async def test_a_new_draw_that_moves_only_the_load_leaves_held_polls_held() -> None:
    index = first(Kind.CHANGING)
    clock = Clock(before_a_draw(index, changes_view=False))
    fleet = FakeWorkers(SHAPE, clock=clock)
    before = document(await fleet.respond(index, {}))
    poll = asyncio.create_task(fleet.respond(index, {"after": "1", "wait": "30"}))
    await until_held(fleet)
    ends = fake_fleet.next_draw_at(SHAPE, index, clock.now)
    assert ends is not None
    clock.now = ends + MARGIN_S
    fleet.refresh()
    await asyncio.sleep(0)
    assert fleet.held == 1
    fleet.close()  # as the server stops: every held poll answers now
    got = document(await asyncio.wait_for(poll, 1.0))
    assert got["generation"] == 1
    assert got["worker_load"] != before["worker_load"]
    assert fleet.polls == {PollEnd.ON_WAIT: 1}


async def test_a_held_poll_whose_client_goes_away_is_counted_dropped() -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    poll = asyncio.create_task(fleet.respond(first(Kind.IDLE), {"after": "1", "wait": "30"}))
    await until_held(fleet)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert (fleet.held, fleet.polls) == (0, {PollEnd.DROPPED: 1})


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"after": "one"}, "after='one'"),
        ({"after": "1", "wait": "-1"}, "wait='-1'"),
        ({"wait": "10"}, "need after"),
        ({"instance": "abc"}, "need after"),
    ],
    ids=["after-not-a-number", "negative-wait", "wait-alone", "instance-alone"],
)
async def test_bad_poll_parameters_get_400_naming_the_parameter(
    query: dict[str, str], named: str
) -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    response = await fleet.respond(first(Kind.BUSY), query)
    assert response.status == 400
    assert named in str(document(response)["error"])
    assert fleet.polls == {PollEnd.REFUSED: 1}
    assert fleet.plain == 0


async def test_counts_keep_plain_reads_polls_and_held_polls_apart() -> None:
    fleet = FakeWorkers(SHAPE, clock=Clock())
    index = first(Kind.IDLE)
    await fleet.respond(index, {})
    await fleet.respond(index, {"after": "0"})
    poll = asyncio.create_task(fleet.respond(index, {"after": "1", "wait": "30"}))
    await until_held(fleet)
    counts = fleet.counts()
    fleet.close()
    await asyncio.wait_for(poll, 1.0)
    assert counts["requests"] == 3
    assert counts["plain"] == 1
    assert counts["held"] == 1
    assert counts["polls"] == {end.value: int(end is PollEnd.AT_ONCE) for end in PollEnd}
    assert counts["streaming"] == sum(
        1 for i in range(SHAPE.workers) if fake_fleet.streams(SHAPE, i)
    )


def test_next_draw_at_is_where_a_changing_workers_draw_ends() -> None:
    index = first(Kind.CHANGING)
    ends = fake_fleet.next_draw_at(SHAPE, index, START)
    assert ends is not None
    assert START < ends <= START + SHAPE.change_period_s
    draw = fake_fleet.epoch(SHAPE, index, START)
    assert fake_fleet.epoch(SHAPE, index, ends - MARGIN_S) == draw
    assert fake_fleet.epoch(SHAPE, index, ends + MARGIN_S) == draw + 1
    assert fake_fleet.next_draw_at(SHAPE, first(Kind.BUSY), START) is None


def test_a_status_of_one_moment_may_count_only_that_moments_answers() -> None:
    expected = fake_fleet.expected_counts(SHAPE, 0, START, {})
    assert fake_fleet.possible_counts(SHAPE, 0, [START], {}) == {expected}


def test_a_status_may_count_each_changing_worker_as_it_answered_at_any_of_the_moments() -> None:
    changing = fake_fleet.changing(SHAPE, 0)
    assert changing == tuple(sorted(CHANGING))
    ends = [fake_fleet.next_draw_at(SHAPE, i, START) for i in changing]
    moments = [START, *(t + MARGIN_S for t in ends if t is not None)]
    possible = fake_fleet.possible_counts(SHAPE, 0, moments, {})
    assert {fake_fleet.expected_counts(SHAPE, 0, t, {}) for t in moments} <= possible
    most = max(p.active_jobs for p in possible)
    never = dataclasses.replace(
        fake_fleet.expected_counts(SHAPE, 0, START, {}), active_jobs=most + 1
    )
    assert never not in possible


CHANGING = {i for i in range(SHAPE.workers) if fake_fleet.kind(SHAPE, i) is Kind.CHANGING}
