"""The load gauge: a reading with the jobs it counts, and a load_fnc that fails or hangs."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from worker_runtime.gauge import LoadGauge, Reading

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

LOG = logging.LoggerAdapter(logging.getLogger("test.gauge"))


class Jobs:
    """The running jobs the gauge counts, and the readings it hands on."""

    def __init__(self, running: int = 0) -> None:
        self.running = running
        self.readings: list[Reading] = []


def gauge_of(measure: object, jobs: Jobs, timeout_s: float = 1.0) -> LoadGauge:
    assert callable(measure)
    return LoadGauge(
        measure,
        running_jobs=lambda: jobs.running,
        on_reading=jobs.readings.append,
        log=LOG,
        timeout_s=timeout_s,
    )


async def test_a_reading_counts_the_jobs_running_while_it_was_measured() -> None:
    jobs = Jobs(running=2)
    gauge = gauge_of(lambda: 0.5, jobs)
    await gauge.refresh()
    assert gauge.reading == Reading(load=0.5, jobs=2)
    assert jobs.readings == [Reading(load=0.5, jobs=2)]


async def test_a_job_that_starts_during_a_measurement_has_the_load_measured_again() -> None:
    # found in a fresh-clone run: a load of 0.5 with 2 jobs read as 1 job of 0.5, the worker
    # (threshold 0.7) called itself full with room for a third call, and LiveKit dropped it
    jobs = Jobs(running=1)
    loads = iter([0.5, 0.5])

    def measure() -> float:
        if jobs.running == 1:
            jobs.running = 2  # the loop started a job while load_fnc ran
        return next(loads)

    gauge = gauge_of(measure, jobs)
    await gauge.refresh()
    assert gauge.reading == Reading(load=0.5, jobs=2)
    assert jobs.readings == [Reading(load=0.5, jobs=2), Reading(load=0.5, jobs=2)]


async def test_jobs_that_keep_changing_leave_the_larger_count_after_the_last_attempt() -> None:
    jobs = Jobs(running=0)
    measured: list[int] = []

    def measure() -> float:
        measured.append(jobs.running)
        jobs.running += 1
        return 0.25 * jobs.running

    gauge = gauge_of(measure, jobs)
    await gauge.refresh()
    assert measured == [0, 1, 2]  # MEASURE_ATTEMPTS, then it stops
    assert gauge.reading == Reading(load=0.75, jobs=3)


async def test_a_load_out_of_range_is_clamped() -> None:
    jobs = Jobs()
    gauge = gauge_of(lambda: 1.7, jobs)
    await gauge.refresh()
    assert gauge.reading.load == 1.0


async def test_a_failing_load_fnc_keeps_the_last_reading_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = Jobs(running=1)
    answers: list[float] = [0.5]

    def measure() -> float:
        if not answers:
            raise ValueError("the metrics endpoint is down")
        return answers.pop()

    gauge = gauge_of(measure, jobs)
    await gauge.refresh()
    with caplog.at_level(logging.ERROR):
        await gauge.refresh()
    assert gauge.reading == Reading(load=0.5, jobs=1)
    assert "load_fnc failed; keeping the last load" in caplog.messages


async def test_a_hung_load_fnc_holds_no_one_up_and_runs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = Jobs()
    release = threading.Event()
    calls: list[None] = []

    def hang() -> float:
        calls.append(None)
        release.wait(5)
        return 0.9

    gauge = gauge_of(hang, jobs, timeout_s=0.05)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(asyncio.gather(gauge.refresh(), gauge.refresh()), 1)
        await asyncio.wait_for(gauge.refresh(), 1)
    assert gauge.reading == Reading(), "the last reading stays until one lands"
    assert len(calls) == 1, "whoever asks while it runs shares the one measurement"
    assert caplog.messages.count("load_fnc is slow; keeping the last load") == 1
    release.set()
    await gauge.refresh()  # joins the same measurement, which now lands
    assert gauge.reading == Reading(load=0.9, jobs=0)
    assert len(calls) == 1


async def test_closing_stops_waiting_for_a_measurement() -> None:
    release = threading.Event()
    gauge = gauge_of(lambda: float(release.wait(5)), Jobs(), timeout_s=0.01)
    await gauge.refresh()
    await gauge.aclose()
    release.set()
    assert gauge.reading == Reading()
