"""The job intake: a burst takes only what the threshold allows, and every offer gets an answer.

The worker's side (`Desk`) is what the worker does with the intake's hooks: the state machine,
a load_fnc of the running jobs over 2 slots measured before each offer and when a job starts, and
`load.is_full` and `load.awaits_first_measurement` with the offers held. The server's side
answers each yes with an assignment, as LiveKit does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from worker_runtime import load, protocol
from worker_runtime.intake import UNMEASURED, IntakeHooks, JobIntake
from worker_runtime.logs import WorkerLog
from worker_runtime.metrics import WorkerMetrics
from worker_runtime.options import WorkerOptions
from worker_runtime.pool import RunningJob
from worker_runtime.reporter import JobReporter
from worker_runtime.request import JobRequest
from worker_runtime.state import (
    WorkerEvent,
    WorkerState,
    held_offer_refusal,
    offer_refusal,
    transition,
)

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

LOG = WorkerLog(logging.getLogger("test.intake"), {})
SLOTS = 2
THRESHOLD = 0.75


async def entrypoint(ctx: object) -> None:
    """Never called: the pool here is a stand-in."""


class Desk:
    """The worker's side: its state, its running jobs, and the messages it sent."""

    def __init__(self, *, prewarmed: int = 2, state: WorkerState = WorkerState.AVAILABLE) -> None:
        self.prewarmed = prewarmed
        self.state = state
        self.running: list[str] = []
        self.reading = (0.0, 0)
        self.sent: list[agent_pb.AvailabilityResponse] = []
        self.statuses: list[agent_pb.UpdateJobStatus] = []
        self.assign_yes = True
        self.intake: JobIntake | None = None
        self.refresh_error: Exception | None = None
        self.launch_after_start_s = 0.0
        """How long a launch goes on once its job runs (the real pool waits for the process's
        word): meanwhile the job is both running and holding its offer's slot."""

    def build(
        self,
        request_fnc: Callable[[JobRequest], Awaitable[None]] | None = None,
        answer_within_s: float = 1.0,
        settle_s: float = 0.5,
    ) -> JobIntake:
        reporter = JobReporter(
            send=self.send,
            metrics=WorkerMetrics(),
            log=LOG,
            active_jobs=lambda: len(self.running),
            on_change=lambda: None,
        )
        hooks = IntakeHooks(
            refresh_load=self.refresh_load,
            offer_refusal=self.offer_refusal,
            held_offer_refusal=lambda: held_offer_refusal(self.state),
            on_held_changed=self.decide,
            worker_id=lambda: "AW_test",
        )
        self.intake = JobIntake(
            WorkerOptions(entrypoint, request_fnc=request_fnc),
            pool=self,
            reporter=reporter,
            send=self.send,
            hooks=hooks,
            log=LOG,
            answer_within_s=answer_within_s,
            settle_s=settle_s,
        )
        return self.intake

    async def launch(self, running: RunningJob) -> None:
        self.running.append(running.job.id)
        asyncio.get_running_loop().call_soon(self.measure)  # the worker measures a new job
        await asyncio.sleep(self.launch_after_start_s)

    async def refresh_load(self) -> None:
        await asyncio.sleep(0)  # the measurement runs in a thread
        if self.refresh_error is not None:
            raise self.refresh_error
        self.measure()

    def measure(self) -> None:
        assert self.intake is not None
        self.reading = (min(1.0, len(self.running) / SLOTS), len(self.running))
        self.decide()
        self.intake.reconsider()

    def occupancy(self) -> load.Occupancy:
        assert self.intake is not None
        measured_load, measured_jobs = self.reading
        held = len(set(self.running) | self.intake.held_ids)  # as the worker counts them
        return load.Occupancy(load=measured_load, measured_jobs=measured_jobs, held_jobs=held)

    def decide(self) -> None:
        full = load.is_full(self.occupancy(), threshold=THRESHOLD)
        event = WorkerEvent.LOAD_ABOVE_THRESHOLD if full else WorkerEvent.LOAD_AT_OR_BELOW_THRESHOLD
        before, self.state = self.state, transition(self.state, event)
        if before is not self.state and self.intake is not None:
            self.intake.reconsider()

    def offer_refusal(self, waited: bool) -> str:
        refusal = offer_refusal(self.state)
        if refusal:
            return refusal
        unknown = load.awaits_first_measurement(
            self.occupancy(), threshold=THRESHOLD, prewarmed=self.prewarmed, waited=waited
        )
        return UNMEASURED if unknown else ""

    def send(self, msg: agent_pb.WorkerMessage) -> None:
        if msg.HasField("update_job"):
            self.statuses.append(msg.update_job)
            return
        answer = msg.availability
        self.sent.append(answer)
        if answer.available and self.assign_yes:  # LiveKit assigns what it was told yes to
            job = agent_pb.Job(id=answer.job_id, type=agent_pb.JT_ROOM)
            assignment = agent_pb.JobAssignment(job=job, token="room-token")
            assert self.intake is not None
            asyncio.get_running_loop().call_soon(self.intake.assign, assignment)

    def answers(self) -> dict[str, bool]:
        """Job id -> available, failing if a job was answered twice."""
        found: dict[str, bool] = {}
        for answer in self.sent:
            assert answer.job_id not in found, f"{answer.job_id} answered twice"
            found[answer.job_id] = answer.available
        return found


def offer(job_id: str) -> agent_pb.AvailabilityRequest:
    room = models_pb.Room(name=f"room-{job_id}")
    return agent_pb.AvailabilityRequest(
        job=agent_pb.Job(id=job_id, type=agent_pb.JT_ROOM, room=room)
    )


def declined(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """Job id -> the reason each "declined a job offer" line gives."""
    return {
        str(getattr(r, "job_id", "")): str(getattr(r, "reason", ""))
        for r in caplog.records
        if r.getMessage() == "declined a job offer"
    }


async def burst(intake: JobIntake, count: int, prefix: str = "AJ") -> list[str]:
    jobs = [f"{prefix}_{n}" for n in range(count)]
    for job_id in jobs:
        intake.offer(offer(job_id))
    await intake.wait(1)
    return jobs


@pytest.mark.parametrize("prewarmed", [0, 1, 2, 3], ids=lambda n: f"{n}-prewarmed")
async def test_a_burst_of_six_offers_takes_only_what_the_threshold_allows(
    prewarmed: int, caplog: pytest.LogCaptureFixture
) -> None:
    desk = Desk(prewarmed=prewarmed)
    intake = desk.build()

    with caplog.at_level(logging.INFO):
        jobs = await burst(intake, 6)

    answers = desk.answers()
    assert sorted(answers) == jobs, "every offer was answered"
    assert sum(answers.values()) == 2, answers
    assert len(desk.running) == 2
    assert sorted(declined(caplog).values()) == ["full"] * 4
    assert intake.pending == 0
    assert desk.state is WorkerState.FULL
    await intake.aclose()


async def test_a_job_that_runs_while_its_launch_goes_on_is_counted_once() -> None:
    # found on the rig: a worker of 4 slots at 0.7 with 2 jobs (0.5) refused the third offer as
    # full, having counted the second job twice (running, and still holding its offer's slot)
    desk = Desk(prewarmed=2)
    desk.launch_after_start_s = 0.2
    intake = desk.build()
    intake.offer(offer("AJ_first"))
    await asyncio.sleep(0.1)  # the first job runs; its launch goes on
    assert desk.running == ["AJ_first"]
    assert intake.pending == 1, "its slot is still held"
    assert desk.state is WorkerState.AVAILABLE, "0.5 of 0.75: one job, counted once"
    intake.offer(offer("AJ_second"))
    await intake.wait(1)
    assert desk.answers() == {"AJ_first": True, "AJ_second": True}
    await intake.aclose()


async def test_with_a_job_running_a_burst_takes_one_more() -> None:
    desk = Desk(prewarmed=3)
    intake = desk.build()
    await burst(intake, 1, prefix="first")
    assert desk.reading == (0.5, 1)

    await burst(intake, 6)

    assert len(desk.running) == 2, "one more at 0.5 a job; two would make 1.5"
    await intake.aclose()


async def test_a_full_worker_says_yes_to_the_offer_whose_slot_filled_it() -> None:
    desk = Desk()
    intake = desk.build()
    await burst(intake, 1, prefix="first")

    async def accept_when_full(req: JobRequest) -> None:
        assert desk.state is WorkerState.FULL, "this offer's own slot filled the worker"
        await req.accept()

    intake = desk.build(accept_when_full)
    await burst(intake, 1)
    assert desk.answers()["AJ_0"] is True
    assert len(desk.running) == 2
    await intake.aclose()


async def test_an_offer_waits_for_the_first_job_to_be_measured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk()
    desk.assign_yes = False  # the first job's assignment is late: nothing can be measured
    intake = desk.build(settle_s=0.05)
    intake.offer(offer("first"))
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.INFO):
        intake.offer(offer("second"))
        await asyncio.sleep(0.01)
        assert "second" not in desk.answers(), "still waiting for a measurement"
        await asyncio.sleep(0.1)
    assert desk.answers() == {"first": True, "second": True}, "then livekit's guess: 2 prewarmed"
    intake.lose_assignments("test over")
    await intake.aclose()


async def test_an_offer_that_waited_in_vain_with_no_guess_left_is_declined(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk(prewarmed=1)
    desk.assign_yes = False
    intake = desk.build(settle_s=0.05)
    with caplog.at_level(logging.INFO):
        intake.offer(offer("first"))
        intake.offer(offer("second"))
        await asyncio.sleep(0.1)
    assert desk.answers() == {"first": True, "second": False}
    assert declined(caplog) == {"second": UNMEASURED}
    intake.lose_assignments("test over")
    await intake.aclose()


async def test_a_declined_offer_lets_its_slot_go() -> None:
    async def reject(req: JobRequest) -> None:
        await req.reject()

    desk = Desk(prewarmed=1)
    intake = desk.build(reject)
    await burst(intake, 1)
    assert desk.answers() == {"AJ_0": False}
    assert intake.pending == 0
    assert desk.state is WorkerState.AVAILABLE
    await intake.aclose()


async def hang(req: JobRequest) -> None:
    await asyncio.sleep(10)


async def fail(req: JobRequest) -> None:
    raise RuntimeError("request_fnc bug")


async def no_answer(req: JobRequest) -> None:
    """Returns without accepting or rejecting."""


async def reject(req: JobRequest) -> None:
    await req.reject()


async def unencodable(req: JobRequest) -> None:
    await req.accept(attributes={"seat": 1})  # type: ignore[dict-item]  # a user's mistake


@pytest.mark.parametrize(
    ("request_fnc", "reason"),
    [
        (hang, "request_fnc"),
        (fail, "request_fnc"),
        (no_answer, "request_fnc"),
        (reject, "request_fnc"),
        (unencodable, "error"),
    ],
    ids=["request-fnc-hangs", "request-fnc-raises", "no-answer", "rejected", "answer-unencodable"],
)
async def test_an_offer_request_fnc_cannot_take_is_answered_no_promptly(
    request_fnc: Callable[[JobRequest], Awaitable[None]],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk()
    intake = desk.build(request_fnc, answer_within_s=0.05)
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(burst(intake, 1), 1)
    assert desk.answers() == {"AJ_0": False}
    assert declined(caplog) == {"AJ_0": reason}
    assert intake.pending == 0
    await intake.aclose()


@pytest.mark.parametrize(
    "state",
    [WorkerState.DRAINING, WorkerState.RETIRED, WorkerState.STARTING],
    ids=lambda s: s.value,
)
async def test_a_worker_out_of_service_answers_no(
    state: WorkerState, caplog: pytest.LogCaptureFixture
) -> None:
    desk = Desk(state=state)
    intake = desk.build()
    with caplog.at_level(logging.INFO):
        await burst(intake, 1)
    assert desk.answers() == {"AJ_0": False}
    assert declined(caplog) == {"AJ_0": state.value}
    await intake.aclose()


async def test_a_drain_while_request_fnc_decides_turns_its_yes_into_no() -> None:
    desk = Desk()

    async def accept_after_the_drain(req: JobRequest) -> None:
        desk.state = transition(desk.state, WorkerEvent.DRAIN)
        await req.accept()

    intake = desk.build(accept_after_the_drain)
    await burst(intake, 1)
    assert desk.answers() == {"AJ_0": False}
    assert desk.running == []
    await intake.aclose()


async def test_a_shutdown_while_request_fnc_decides_answers_no(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk()
    intake = desk.build(hang, answer_within_s=5)
    intake.offer(offer("AJ_0"))
    await asyncio.sleep(0.01)
    assert desk.sent == []

    with caplog.at_level(logging.INFO):
        await intake.aclose(timeout_s=0.05)  # then what is still going is cancelled

    assert desk.answers() == {"AJ_0": False}
    assert declined(caplog) == {"AJ_0": "shutdown"}


async def test_an_offer_after_the_close_is_answered_no_at_once() -> None:
    desk = Desk()
    intake = desk.build()
    await intake.aclose()
    intake.offer(offer("AJ_late"))
    assert desk.answers() == {"AJ_late": False}


async def test_a_broken_load_measurement_still_answers_no(
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk = Desk()
    desk.refresh_error = RuntimeError("a bug in the worker")
    intake = desk.build()
    with caplog.at_level(logging.INFO):
        await burst(intake, 1)
    assert desk.answers() == {"AJ_0": False}
    assert declined(caplog) == {"AJ_0": "error"}
    assert "job offer failed" in caplog.messages, "the bug is logged as before"
    await intake.aclose()


async def test_a_yes_whose_assignment_never_comes_is_reported_failed_not_answered_again() -> None:
    desk = Desk()
    desk.assign_yes = False
    intake = desk.build()
    intake.offer(offer("AJ_0"))
    await asyncio.sleep(0.01)
    assert desk.answers() == {"AJ_0": True}

    intake.lose_assignments("the connection to LiveKit dropped")
    await intake.wait(1)

    assert desk.answers() == {"AJ_0": True}, "no second answer after a yes"
    [status] = desk.statuses
    assert status.status == protocol.JobStatus.FAILED.value
    assert "the connection to LiveKit dropped" in status.error
    assert intake.pending == 0
    await intake.aclose()
