"""The worker's state machine: every allowed move, and the ones that must never happen."""

from __future__ import annotations

import contextlib

import pytest

from worker_runtime.state import (
    InvalidTransition,
    WorkerEvent,
    WorkerState,
    held_offer_refusal,
    is_ready,
    offer_refusal,
    retire_refusal,
    takes_jobs,
    transition,
    unretire_refusal,
)

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

S = WorkerState
E = WorkerEvent

ALLOWED = [
    (S.STARTING, E.REGISTERED, S.AVAILABLE),
    (S.STARTING, E.CONNECTION_LOST, S.STARTING),
    (S.STARTING, E.LOAD_ABOVE_THRESHOLD, S.STARTING),
    (S.AVAILABLE, E.LOAD_ABOVE_THRESHOLD, S.FULL),
    (S.AVAILABLE, E.LOAD_AT_OR_BELOW_THRESHOLD, S.AVAILABLE),
    (S.FULL, E.LOAD_AT_OR_BELOW_THRESHOLD, S.AVAILABLE),
    (S.FULL, E.LOAD_ABOVE_THRESHOLD, S.FULL),
    (S.AVAILABLE, E.CONNECTION_LOST, S.STARTING),
    (S.FULL, E.CONNECTION_LOST, S.STARTING),
    (S.STARTING, E.DRAIN, S.DRAINING),
    (S.AVAILABLE, E.DRAIN, S.DRAINING),
    (S.FULL, E.DRAIN, S.DRAINING),
    (S.DRAINING, E.DRAIN, S.DRAINING),
    (S.DRAINING, E.REGISTERED, S.DRAINING),
    (S.DRAINING, E.CONNECTION_LOST, S.DRAINING),
    (S.DRAINING, E.LOAD_AT_OR_BELOW_THRESHOLD, S.DRAINING),
    (S.DRAINING, E.LOAD_ABOVE_THRESHOLD, S.DRAINING),
    (S.DRAINING, E.RETIRE, S.DRAINING),
    (S.DRAINING, E.RETIREMENT_EXPIRED, S.DRAINING),
    (S.DRAINING, E.UNRETIRE, S.DRAINING),
    (S.DRAINING, E.CLOSE, S.CLOSED),
    (S.AVAILABLE, E.CLOSE, S.CLOSED),
    (S.STARTING, E.CLOSE, S.CLOSED),
    (S.CLOSED, E.CLOSE, S.CLOSED),
    (S.STARTING, E.RETIRE, S.RETIRED),
    (S.AVAILABLE, E.RETIRE, S.RETIRED),
    (S.FULL, E.RETIRE, S.RETIRED),
    (S.RETIRED, E.RETIRE, S.RETIRED),
    (S.RETIRED, E.REGISTERED, S.RETIRED),
    (S.RETIRED, E.CONNECTION_LOST, S.RETIRED),
    (S.RETIRED, E.LOAD_ABOVE_THRESHOLD, S.RETIRED),
    (S.RETIRED, E.LOAD_AT_OR_BELOW_THRESHOLD, S.RETIRED),
    (S.RETIRED, E.RETIREMENT_EXPIRED, S.AVAILABLE),
    (S.RETIRED, E.UNRETIRE, S.AVAILABLE),
    (S.RETIRED, E.DRAIN, S.DRAINING),
    (S.RETIRED, E.CLOSE, S.CLOSED),
    # a socket that was opening while the worker closed reports in late
    (S.CLOSED, E.REGISTERED, S.CLOSED),
    (S.CLOSED, E.CONNECTION_LOST, S.CLOSED),
    # and a load measurement still running lands after it
    (S.CLOSED, E.LOAD_AT_OR_BELOW_THRESHOLD, S.CLOSED),
    (S.CLOSED, E.LOAD_ABOVE_THRESHOLD, S.CLOSED),
]


@pytest.mark.parametrize(
    ("before", "event", "after"), ALLOWED, ids=[f"{b.value}-{e.value}" for b, e, _ in ALLOWED]
)
def test_allowed_move(before: WorkerState, event: WorkerEvent, after: WorkerState) -> None:
    assert transition(before, event) is after


FORBIDDEN = [
    (S.AVAILABLE, E.REGISTERED),
    (S.FULL, E.REGISTERED),
    (S.CLOSED, E.DRAIN),
    (S.CLOSED, E.RETIRE),
    (S.STARTING, E.RETIREMENT_EXPIRED),
    (S.AVAILABLE, E.RETIREMENT_EXPIRED),
    (S.FULL, E.RETIREMENT_EXPIRED),
    (S.CLOSED, E.RETIREMENT_EXPIRED),
    (S.STARTING, E.UNRETIRE),
    (S.AVAILABLE, E.UNRETIRE),
    (S.FULL, E.UNRETIRE),
    (S.CLOSED, E.UNRETIRE),
]


@pytest.mark.parametrize(
    ("before", "event"), FORBIDDEN, ids=[f"{b.value}-{e.value}" for b, e in FORBIDDEN]
)
def test_forbidden_move_raises(before: WorkerState, event: WorkerEvent) -> None:
    with pytest.raises(InvalidTransition, match=before.value):
        transition(before, event)


def test_draining_never_returns_to_available() -> None:
    state = S.DRAINING
    for event in E:
        if event is not E.CLOSE:
            state = transition(state, event)
        assert state is S.DRAINING


@pytest.mark.parametrize("event", list(E), ids=lambda e: e.value)
def test_nothing_leaves_closed(event: WorkerEvent) -> None:
    with contextlib.suppress(InvalidTransition):  # forbidden is fine too; leaving CLOSED is not
        assert transition(S.CLOSED, event) is S.CLOSED


def test_a_retired_worker_stays_retired_through_reconnects_and_load_until_it_expires() -> None:
    state = transition(S.AVAILABLE, E.RETIRE)
    for event in (E.CONNECTION_LOST, E.LOAD_ABOVE_THRESHOLD, E.REGISTERED, E.RETIRE):
        state = transition(state, event)
        assert state is S.RETIRED
        assert not is_ready(state)
        assert not takes_jobs(state)
    assert transition(state, E.RETIREMENT_EXPIRED) is S.AVAILABLE


def test_sigterm_ends_a_retirement_for_good() -> None:
    state = transition(transition(S.FULL, E.RETIRE), E.DRAIN)
    assert transition(state, E.RETIREMENT_EXPIRED) is S.DRAINING
    assert transition(state, E.UNRETIRE) is S.DRAINING


def test_a_withdrawn_retirement_takes_jobs_at_once() -> None:
    state = transition(S.AVAILABLE, E.RETIRE)
    assert unretire_refusal(state) == ""
    state = transition(state, E.UNRETIRE)
    assert is_ready(state)
    assert takes_jobs(state)


def test_shutdown_racing_a_reconnect_stays_closed() -> None:
    state = transition(transition(S.STARTING, E.DRAIN), E.CLOSE)
    for event in (E.REGISTERED, E.CONNECTION_LOST):
        state = transition(state, event)
    assert state is S.CLOSED


@pytest.mark.parametrize(
    ("state", "ready", "takes"),
    [
        (S.STARTING, False, False),
        (S.AVAILABLE, True, True),
        (S.FULL, True, False),
        (S.RETIRED, False, False),
        (S.DRAINING, False, False),
        (S.CLOSED, False, False),
    ],
    ids=lambda v: v.value if isinstance(v, WorkerState) else str(v),
)
def test_ready_and_taking_jobs(state: WorkerState, ready: bool, takes: bool) -> None:
    assert is_ready(state) is ready
    assert takes_jobs(state) is takes


def test_a_full_worker_stays_ready() -> None:
    assert is_ready(transition(S.AVAILABLE, E.LOAD_ABOVE_THRESHOLD))


@pytest.mark.parametrize(
    ("state", "new_offer", "held_offer"),
    [
        (S.AVAILABLE, "", ""),
        (S.FULL, "full", ""),
        (S.STARTING, "starting", "starting"),
        (S.RETIRED, "retired", "retired"),
        (S.DRAINING, "draining", "draining"),
        (S.CLOSED, "closed", "closed"),
    ],
    ids=lambda v: v.value if isinstance(v, WorkerState) else repr(v),
)
def test_an_offer_already_held_survives_full_but_not_leaving_service(
    state: WorkerState, new_offer: str, held_offer: str
) -> None:
    """The slots a worker holds may be what made it FULL: that must not undo their yes."""
    assert offer_refusal(state) == new_offer
    assert (offer_refusal(state) == "") is takes_jobs(state)
    assert held_offer_refusal(state) == held_offer


@pytest.mark.parametrize(
    ("state", "jobs", "offers", "refusal"),
    [
        (S.AVAILABLE, 0, 0, ""),
        (S.FULL, 0, 0, ""),
        (S.STARTING, 0, 0, ""),
        (S.RETIRED, 0, 0, ""),
        (S.DRAINING, 0, 0, ""),
        (S.AVAILABLE, 1, 0, "busy"),
        (S.AVAILABLE, 0, 1, "busy"),
        (S.DRAINING, 2, 0, "busy"),
        (S.CLOSED, 0, 0, "closed"),
    ],
    ids=[
        "idle",
        "full-but-idle",
        "not-registered",
        "retired-again",
        "draining",
        "running-job",
        "job-on-its-way",
        "draining-busy",
        "closed",
    ],
)
def test_retires_only_while_holding_no_job(
    state: WorkerState, jobs: int, offers: int, refusal: str
) -> None:
    assert retire_refusal(state, active_jobs=jobs, pending_offers=offers) == refusal


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        (S.RETIRED, ""),
        (S.STARTING, ""),
        (S.AVAILABLE, ""),
        (S.FULL, ""),
        (S.DRAINING, "draining"),
        (S.CLOSED, "closed"),
    ],
    ids=[
        "retired",
        "not-retired-not-registered",
        "not-retired-available",
        "not-retired-full",
        "draining-stays-out",
        "closed-stays-out",
    ],
)
def test_unretires_unless_draining_or_closed(state: WorkerState, refusal: str) -> None:
    assert unretire_refusal(state) == refusal
