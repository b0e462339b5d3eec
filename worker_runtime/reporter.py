"""Job events, told to everyone who needs them: the server, the metrics and the log.

Owns what the worker says when a job starts, ends or cannot start. It sends through a function it
is given, so it never sees the socket, and it learns of jobs from the pool's callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from livekit.protocol import agent as agent_pb

from worker_runtime import protocol
from worker_runtime.metrics import WorkerMetrics
from worker_runtime.pool import RunningJob
from worker_runtime.process import EndReason, JobOutcome


class JobReporter:
    """Turns pool events into UpdateJobStatus messages, metrics and log lines."""

    def __init__(
        self,
        *,
        send: Callable[[agent_pb.WorkerMessage], object],
        metrics: WorkerMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        active_jobs: Callable[[], int],
        on_change: Callable[[], None],
    ) -> None:
        self._send = send
        self._metrics = metrics
        self._log = log
        self._active_jobs = active_jobs
        self._on_change = on_change

    def _changed(self) -> None:
        self._metrics.active_jobs.set(self._active_jobs())
        self._on_change()

    def launched(self) -> None:
        """A job was handed to a process."""
        self._changed()

    def started(self, running: RunningJob, latency_s: float) -> None:
        """The entrypoint is being called, `latency_s` after the assignment."""
        self._metrics.jobs_started.inc()
        self._metrics.job_start_latency.observe(latency_s)
        extra = {"job_id": running.job.id, "job_pid": running.pid}
        self._log.info("job running", extra=extra | {"start_latency_ms": round(latency_s * 1e3, 1)})
        self._send(protocol.job_status(running.job.id, protocol.JobStatus.RUNNING))

    def ended(self, running: RunningJob, outcome: JobOutcome) -> None:
        """The job's process is gone; success or the failure and its reason."""
        job_id = running.job.id
        extra = {"job_id": job_id, "reason": outcome.reason.value, "error": outcome.error}
        if outcome.reason is EndReason.SUCCESS:
            self._metrics.jobs_succeeded.inc()
            self._log.info("job succeeded", extra=extra)
            self._send(protocol.job_status(job_id, protocol.JobStatus.SUCCESS))
        else:
            self._metrics.jobs_failed.labels(reason=outcome.reason.value).inc()
            self._log.warning("job failed", extra=extra)
            self._send(protocol.job_status(job_id, protocol.JobStatus.FAILED, outcome.error))
        self._changed()

    def not_started(self, job_id: str, error: str) -> None:
        """No process could be started for the job (or the worker closed before one was free)."""
        self._log.error(
            "could not start a process for the job", extra={"job_id": job_id, "error": error}
        )
        self.never_ran(job_id, "process_start", error)

    def never_ran(self, job_id: str, reason: str, error: str) -> None:
        """An accepted job that will not run: the server learns it failed, and why.

        `reason` is the metric label (process_start, no_assignment, shutdown); the caller logs.
        """
        self._metrics.jobs_failed.labels(reason=reason).inc()
        self._send(protocol.job_status(job_id, protocol.JobStatus.FAILED, error))
