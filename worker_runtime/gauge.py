"""The worker's load, measured off the event loop: one measurement at a time, bounded in time.

Owns when the load is measured and what is kept of it: the last good value and how many jobs were
running when it was taken (what `load.Occupancy` needs). The status loop and each job offer ask
for a fresh reading; whoever asks while a measurement runs shares it. A measurement that fails,
or outlasts `timeout_s`, leaves the last reading in place and is logged: a hung load_fnc holds up
neither an offer's answer nor the status, and never runs twice at once. It decides nothing:
`on_reading` tells the worker a new reading landed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from worker_runtime import load

MEASURE_TIMEOUT_S = 1.0
"""How long an offer's answer or the status loop waits for a measurement."""

MEASURE_ATTEMPTS = 3
"""Measurements a refresh takes at most while the jobs keep changing under them."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured load (0..1) and the number of jobs running when it was measured (the same
    before and after; if jobs came or went meanwhile, the larger count)."""

    load: float = 0.0
    jobs: int = 0


class LoadGauge:
    """Measures with a blocking `measure` in a thread and keeps the last good reading."""

    def __init__(
        self,
        measure: Callable[[], float],
        *,
        running_jobs: Callable[[], int],
        on_reading: Callable[[Reading], None],
        log: logging.LoggerAdapter[logging.Logger],
        timeout_s: float = MEASURE_TIMEOUT_S,
    ) -> None:
        self._measure = measure
        self._running_jobs = running_jobs
        self._on_reading = on_reading
        self._log = log
        self._timeout_s = timeout_s
        self._reading = Reading()
        self._settled = True
        self._measuring: asyncio.Task[float] | None = None
        self._slow_logged = False

    @property
    def reading(self) -> Reading:
        return self._reading

    async def refresh(self) -> None:
        """Measure now (or join the measurement running); return once it landed, or after
        `timeout_s` with the last reading still in place.

        A load_fnc runs in a thread while the loop starts and ends jobs: if the jobs running
        changed while it measured, the load may count either set, so it is measured again
        (`MEASURE_ATTEMPTS` in all). Counting the smaller set would make each job look dearer
        than it is and report the worker full while it has room, and LiveKit drops a dispatch
        that finds no available worker.
        """
        for _ in range(MEASURE_ATTEMPTS):
            task = self._measuring or self._start()
            finished, _ = await asyncio.wait([task], timeout=self._timeout_s)
            if not finished:
                if not self._slow_logged:
                    self._slow_logged = True
                    self._log.warning(
                        "load_fnc is slow; keeping the last load",
                        extra={"timeout_s": self._timeout_s},
                    )
                return
            if self._settled:
                return

    def _start(self) -> asyncio.Task[float]:
        jobs = self._running_jobs()  # before the thread starts, compared once it landed
        task = asyncio.create_task(asyncio.to_thread(self._measure), name="load-measure")
        task.add_done_callback(lambda done: self._landed(done, jobs))
        self._measuring = task
        return task

    def _landed(self, task: asyncio.Task[float], jobs_before: int) -> None:
        self._measuring = None
        self._slow_logged = False
        self._settled = True
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._log.error("load_fnc failed; keeping the last load", exc_info=error)
            return
        jobs_after = self._running_jobs()
        self._settled = jobs_after == jobs_before
        jobs = max(jobs_before, jobs_after)
        self._reading = Reading(load=load.clamp_load(task.result()), jobs=jobs)
        self._on_reading(self._reading)

    async def aclose(self) -> None:
        """Stop waiting for a measurement still running (its thread ends by itself)."""
        task = self._measuring
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
