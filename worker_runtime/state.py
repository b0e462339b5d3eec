"""The worker's state machine: one enum and the one function that allows its moves.

Owns which states exist and which events move between them. Pure: no I/O, no clock, no logging;
the worker feeds it events and acts on the state it returns.
"""

from __future__ import annotations

import enum


class WorkerState(enum.Enum):
    """Where the worker is. Only AVAILABLE and FULL are registered and serving."""

    STARTING = "starting"
    """Not (or no longer) registered with the server: connecting or reconnecting."""
    AVAILABLE = "available"
    """Registered; load at or below load_threshold, counting the jobs it holds that the load
    does not show yet (`load.is_full`): takes jobs."""
    FULL = "full"
    """Registered; load above load_threshold, or the jobs it holds would put it there: reports
    WS_FULL, still ready, takes no new job (one it already holds goes on)."""
    RETIRED = "retired"
    """Agreed to go (POST /retire) while idle: takes no job, not ready, reports WS_FULL. Serves
    again when the retirer withdraws the retirement (DELETE /retire) or it expires without a
    SIGTERM; drains on SIGTERM."""
    DRAINING = "draining"
    """SIGTERM seen, or the connection to LiveKit given up: takes nothing new, waits for its
    jobs."""
    CLOSED = "closed"
    """Stopped; the process is about to exit."""


class WorkerEvent(enum.Enum):
    """What can happen to the worker."""

    REGISTERED = "registered"
    CONNECTION_LOST = "connection_lost"
    LOAD_ABOVE_THRESHOLD = "load_above_threshold"
    LOAD_AT_OR_BELOW_THRESHOLD = "load_at_or_below_threshold"
    RETIRE = "retire"
    RETIREMENT_EXPIRED = "retirement_expired"
    UNRETIRE = "unretire"
    DRAIN = "drain"
    CLOSE = "close"


class InvalidTransition(RuntimeError):
    """An event that cannot happen in the current state (a bug in the caller)."""


_S = WorkerState
_E = WorkerEvent
_LOAD = (_E.LOAD_ABOVE_THRESHOLD, _E.LOAD_AT_OR_BELOW_THRESHOLD)
_HANDSHAKE = (_E.RETIRE, _E.RETIREMENT_EXPIRED, _E.UNRETIRE)
_MOVES: dict[tuple[WorkerState, WorkerEvent], WorkerState] = {
    (_S.STARTING, _E.REGISTERED): _S.AVAILABLE,
    (_S.STARTING, _E.CONNECTION_LOST): _S.STARTING,
    (_S.STARTING, _E.LOAD_ABOVE_THRESHOLD): _S.STARTING,
    (_S.STARTING, _E.LOAD_AT_OR_BELOW_THRESHOLD): _S.STARTING,
    (_S.AVAILABLE, _E.LOAD_ABOVE_THRESHOLD): _S.FULL,
    (_S.AVAILABLE, _E.LOAD_AT_OR_BELOW_THRESHOLD): _S.AVAILABLE,
    (_S.AVAILABLE, _E.CONNECTION_LOST): _S.STARTING,
    (_S.FULL, _E.LOAD_AT_OR_BELOW_THRESHOLD): _S.AVAILABLE,
    (_S.FULL, _E.LOAD_ABOVE_THRESHOLD): _S.FULL,
    (_S.FULL, _E.CONNECTION_LOST): _S.STARTING,
    # expiry, or withdrawal (DELETE /retire): serving again; the worker then feeds the
    # connection's and the load's state
    (_S.RETIRED, _E.RETIREMENT_EXPIRED): _S.AVAILABLE,
    (_S.RETIRED, _E.UNRETIRE): _S.AVAILABLE,
}
for _state in (_S.STARTING, _S.AVAILABLE, _S.FULL):
    _MOVES[(_state, _E.RETIRE)] = _S.RETIRED
for _state in (_S.STARTING, _S.AVAILABLE, _S.FULL, _S.RETIRED, _S.DRAINING):
    _MOVES[(_state, _E.DRAIN)] = _S.DRAINING
    _MOVES[(_state, _E.CLOSE)] = _S.CLOSED
# retired stays retired whatever the connection and the load do (retiring again included)
for _event in (_E.REGISTERED, _E.CONNECTION_LOST, *_LOAD, _E.RETIRE):
    _MOVES[(_S.RETIRED, _event)] = _S.RETIRED
# a drain is final: nothing but CLOSE leaves it
for _event in (_E.REGISTERED, _E.CONNECTION_LOST, *_LOAD, *_HANDSHAKE):
    _MOVES[(_S.DRAINING, _event)] = _S.DRAINING
# a socket that was opening as the worker closed may still report in, and a load measurement
# still running may land: nothing changes
for _event in (_E.REGISTERED, _E.CONNECTION_LOST, *_LOAD, _E.CLOSE):
    _MOVES[(_S.CLOSED, _event)] = _S.CLOSED


def transition(state: WorkerState, event: WorkerEvent) -> WorkerState:
    """The state after `event`; `InvalidTransition` for a move the worker must never make."""
    try:
        return _MOVES[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} cannot happen while {state.value}") from None


def takes_jobs(state: WorkerState) -> bool:
    """Whether an availability request may be answered yes."""
    return state is WorkerState.AVAILABLE


def offer_refusal(state: WorkerState) -> str:
    """Why a new job offer is answered no now (the state's name), or "" when it may be taken."""
    return "" if takes_jobs(state) else state.value


def held_offer_refusal(state: WorkerState) -> str:
    """Why an offer taken earlier must still be answered no (the state's name), or "".

    An offer keeps its slot while request_fnc decides; when request_fnc says yes, the worker
    says yes too unless it stopped serving meanwhile (lost its connection, retired, draining,
    closed). FULL does not undo it: the slots it holds may be what filled the worker.
    """
    return "" if state in (WorkerState.AVAILABLE, WorkerState.FULL) else state.value


def retire_refusal(state: WorkerState, *, active_jobs: int, pending_offers: int) -> str:
    """The victim handshake: why the worker may not retire now, or "" when it may.

    A worker retires only while it holds no job, nor one accepted and still on its way (waiting
    for its assignment or its process); once RETIRED it takes nothing new. Retiring again is
    accepted, and so is retiring a draining worker (it changes nothing).
    """
    if active_jobs or pending_offers:
        return "busy"
    if state is WorkerState.CLOSED:
        return "closed"
    return ""


def unretire_refusal(state: WorkerState) -> str:
    """The victim handshake undone: why the worker may not serve again, or "" when it may.

    Withdrawing a retirement puts a RETIRED worker back in service at once; a starting, available
    or full worker has nothing to withdraw and may too (the request is idempotent). A drain
    (SIGTERM) or a close is final: such a worker stays out and says which it is.
    """
    if state is WorkerState.DRAINING:
        return "draining"
    if state is WorkerState.CLOSED:
        return "closed"
    return ""


def is_ready(state: WorkerState) -> bool:
    """/readyz: registered and not draining. A full worker stays ready."""
    return state in (WorkerState.AVAILABLE, WorkerState.FULL)
