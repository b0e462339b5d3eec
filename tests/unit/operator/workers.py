"""Worker values for the autoscaler and scale-down tests, built as `observation` builds them."""

from __future__ import annotations

from collections.abc import Mapping

from agentworker_operator import observation
from agentworker_operator.observation import WorkerState

THRESHOLD = 0.7


def worker(
    name: str,
    *,
    load: float = 0.0,
    jobs: int = 0,
    state: WorkerState | None = None,
    ready: bool = True,
    terminating: bool = False,
    retirable: bool = True,
    annotations: Mapping[str, str] | None = None,
    template_hash: str = "",
    retired: bool = False,
    job_ids: tuple[str, ...] | None = None,
    restarts: int = 0,
) -> observation.Worker:
    """A worker that reported `load` and `jobs` (state UNKNOWN or STARTING: no report);
    `job_ids`, when given, are its jobs' ids (and `jobs` their count)."""
    pod = observation.PodView(
        name=name,
        ip=f"127.0.9.{abs(hash(name)) % 250 + 1}",
        ready=ready,
        terminating=terminating,
        template_hash=template_hash,
        annotations=dict(annotations or {}),
        restarts=restarts,
    )
    if state in (WorkerState.UNKNOWN, WorkerState.STARTING):
        return observation.Worker(pod=pod, report=None, error="timeout", state=state)
    report = observation.WorkerReport(
        load=load,
        active_jobs=len(job_ids) if job_ids is not None else jobs,
        job_ids=job_ids,
        draining=(state is WorkerState.DRAINING and not terminating) or retired,
        retired=retired,
        registered=True,
        retirable=retirable,
    )
    derived = observation.classify(pod, report, load_threshold=THRESHOLD)
    return observation.Worker(pod=pod, report=report, state=derived)


def fleet(*loads_and_jobs: tuple[float, int]) -> list[observation.Worker]:
    """Serving workers w0, w1, ... with the given (load, jobs)."""
    return [worker(f"w{i}", load=load, jobs=jobs) for i, (load, jobs) in enumerate(loads_and_jobs)]
