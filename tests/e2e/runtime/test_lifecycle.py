"""The worker's life end to end: drain on SIGTERM, isolated job failures, LiveKit restarts."""

from __future__ import annotations

import json
import signal
import uuid

import aiohttp
import pytest

from tests.e2e.runtime.harness import DedicatedLiveKit, LiveKit, WorkerFactory, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

AGENTS = "tests.e2e.runtime.agents"


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def test_sigterm_with_three_running_jobs_drains_then_exits_zero(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name, idle=3)
    rooms = [room_name() for _ in range(3)]
    for room in rooms:
        await livekit.dispatch(agent_name, room, json.dumps({"sleep_s": 8}))
    await worker.wait_for("e2e job running", count=3)

    worker.signal(signal.SIGTERM)

    async def not_ready() -> bool:
        return await worker.status("/readyz") == 503

    await eventually(not_ready, within_s=5, what="/readyz to stop being 200", last=worker.tail)
    doc = await worker.document()
    assert (doc["state"], doc["draining"], doc["active_jobs"]) == ("draining", True, 3)
    late = room_name()
    await livekit.dispatch(agent_name, late, json.dumps({"sleep_s": 1}))

    assert await worker.wait_exit(within_s=60) == 0
    assert len(worker.find("e2e job done")) == 3
    assert len(worker.find("job succeeded")) == 3
    assert not worker.find("e2e job running", room=late), "a draining worker took a new job"
    assert worker.find("all jobs ended, stopping")


async def test_crash_and_memory_limit_leave_another_job_untouched(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        idle=3,
        env={"AGENT_JOB_MEMORY_LIMIT_MB": "150", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "5"},
    )
    steady, crashing, hog = room_name(), room_name(), room_name()
    await livekit.dispatch(agent_name, steady, json.dumps({"sleep_s": 10}))
    [steady_run] = await worker.wait_for("e2e job running", room=steady)
    await livekit.dispatch(agent_name, crashing, json.dumps({"crash": True}))
    await livekit.dispatch(agent_name, hog, json.dumps({"hog_mb": 300, "sleep_s": 60}))

    [crash_run] = await worker.wait_for("e2e job running", room=crashing)
    [hog_run] = await worker.wait_for("e2e job running", room=hog)
    [crashed] = await worker.wait_for("job failed", job_id=crash_run["job_id"])
    assert crashed["reason"] == "crash"
    [killed] = await worker.wait_for("job failed", job_id=hog_run["job_id"])
    assert killed["reason"] == "memory_limit"
    assert worker.find("e2e shutdown callback", job_id=hog_run["job_id"])

    assert (await worker.document())["active_jobs"] == 1
    await worker.wait_for("job succeeded", job_id=steady_run["job_id"])
    assert worker.find("e2e job done", job_id=steady_run["job_id"])
    assert await worker.status("/readyz") == 200
    _, metrics = await worker.get("/metrics")
    assert 'agentworker_worker_jobs_failed_total{reason="crash"} 1.0' in metrics
    assert 'agentworker_worker_jobs_failed_total{reason="memory_limit"} 1.0' in metrics


async def test_a_job_that_raises_is_reported_failed_with_its_error(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name)
    await livekit.dispatch(agent_name, room_name(), json.dumps({"raise": "bad metadata"}))
    [failed] = await worker.wait_for("job failed")
    assert failed["reason"] == "error"
    assert failed["error"] == "RuntimeError: bad metadata"
    assert worker.find("e2e shutdown callback", job_id=failed["job_id"])
    assert await worker.status("/readyz") == 200


async def test_livekit_restart_worker_registers_again_and_the_job_finishes(
    dedicated_livekit: DedicatedLiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    worker = await workers.start(f"{AGENTS}:opts", lk, agent_name=agent_name)
    first_id = (await worker.document())["worker_id"]
    await lk.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 15}))
    [run] = await worker.wait_for("e2e job running")

    await dedicated_livekit.restart()

    await worker.wait_for("lost the connection to LiveKit")
    seen: list[object] = []

    async def registered_again() -> bool:
        doc = await worker.document()
        seen.append(doc)
        return doc["state"] == "available" and doc["worker_id"] not in ("", first_id)

    await eventually(
        registered_again, within_s=30, what="a new registration", last=lambda: seen[-1:]
    )
    assert (await worker.document())["active_jobs"] == 1, "the job kept running"
    await worker.wait_for("reported running jobs after registering")
    await worker.wait_for("job succeeded", job_id=run["job_id"], within_s=30)
    assert worker.find("e2e job done", job_id=run["job_id"])


async def test_drain_timeout_ends_remaining_jobs_with_their_callbacks_and_exits_zero(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_DRAIN_TIMEOUT_S": "2"}
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 90}))
    [run] = await worker.wait_for("e2e job running")
    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit(within_s=30) == 0
    assert worker.find("drain timeout reached, ending the remaining jobs")
    [callback] = worker.find("e2e shutdown callback", job_id=run["job_id"])
    assert callback["reason"] == "worker shutting down"


async def test_job_that_hangs_past_shutdown_is_killed_and_reported_failed(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        env={"AGENT_DRAIN_TIMEOUT_S": "1", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "2"},
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"block_s": 90}))
    [run] = await worker.wait_for("e2e job running")
    worker.signal(signal.SIGTERM)
    [failed] = await worker.wait_for("job failed", job_id=run["job_id"], within_s=20)
    assert failed["reason"] == "shutdown_timeout"
    assert await worker.wait_exit(within_s=20) == 0


async def test_failing_prewarm_is_logged_and_retried_and_the_worker_stays_up(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:broken_prewarm", livekit, agent_name=agent_name, ready=False
    )
    await worker.wait_ready()
    failures = await worker.wait_for("job process failed to start", count=2)
    assert failures[0]["error"] == "RuntimeError: model file missing"
    await livekit.dispatch(agent_name, room_name())
    [failed] = await worker.wait_for("could not start a process for the job")
    assert "model file missing" in str(failed["error"])
    assert await worker.status("/readyz") == 200


async def test_http_server_binds_pod_ip(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        ready=False,
        env={"AGENT_HOST": "", "POD_IP": "127.0.0.3"},
    )
    worker.host = "127.0.0.3"
    await worker.wait_ready()
    [listening] = await worker.wait_for("http server listening")
    assert listening["host"] == "127.0.0.3"


async def test_retire_handshake_accepts_only_an_idle_worker_with_the_token(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )

    assert (await worker.retire("Bearer wrong"))[0] == 401
    await livekit.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 3}))
    [run] = await worker.wait_for("e2e job running")
    assert await worker.retire(f"Bearer {token}") == (409, {"retired": False, "reason": "busy"})
    assert await worker.status("/readyz") == 200, "a refused retirement changes nothing"
    await worker.wait_for("job succeeded", job_id=run["job_id"])

    assert await worker.retire(f"Bearer {token}") == (200, {"retired": True})
    doc = await worker.document()
    assert (doc["state"], doc["retired"], doc["draining"]) == ("retired", True, False)
    assert await worker.status("/readyz") == 503
    late = room_name()
    await livekit.dispatch(agent_name, late)
    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit(within_s=20) == 0
    assert not worker.find("e2e job running", room=late)
    assert token not in worker.log_path.read_text()


async def test_retire_requires_the_bearer_scheme(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )
    for header in (token, f"bearer {token}", f"Basic {token}", f"Bearer  {token}"):
        assert (await worker.retire(header))[0] == 401, header
    assert await worker.status("/readyz") == 200


async def test_retirement_expires_and_the_worker_takes_jobs_again(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        env={"AGENT_CONTROL_TOKEN": token, "AGENT_RETIRE_TIMEOUT_S": "2"},
    )
    assert await worker.retire(f"Bearer {token}") == (200, {"retired": True})
    assert await worker.status("/readyz") == 503

    # the retirer (the operator) never deletes the pod: the retirement lapses by itself
    await worker.wait_ready(within_s=10)
    doc = await worker.document()
    assert (doc["state"], doc["retired"], doc["draining"]) == ("available", False, False)
    room = room_name()
    await livekit.dispatch(agent_name, room)
    await worker.wait_for("e2e job running", room=room)
    assert worker.find("retirement expired, taking jobs again")


async def test_withdrawn_retirement_serves_again_at_once_and_takes_a_job(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )
    assert await worker.unretire(f"Bearer {token}") == (200, {"retired": False}), "nothing to do"
    assert await worker.retire(f"Bearer {token}") == (200, {"retired": True})
    for header in ("", "Bearer wrong", token, f"bearer {token}"):
        assert (await worker.unretire(header))[0] == 401, header
    assert (await worker.document())["state"] == "retired", "a refused withdrawal changes nothing"

    # the retirer abandoned its scale-down: the worker serves long before its 60 s expiry
    assert await worker.unretire(f"Bearer {token}") == (200, {"retired": False})
    assert await worker.status("/readyz") == 200
    doc = await worker.document()
    assert (doc["state"], doc["retired"], doc["draining"]) == ("available", False, False)
    assert await worker.unretire(f"Bearer {token}") == (200, {"retired": False}), "idempotent"
    room = room_name()
    await livekit.dispatch(agent_name, room)
    await worker.wait_for("e2e job running", room=room)
    assert worker.find("retirement withdrawn", state="available")
    assert not worker.find("retirement expired, taking jobs again")
    assert token not in worker.log_path.read_text()


async def test_a_draining_worker_refuses_to_withdraw_its_retirement(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"sleep_s": 8}))
    [run] = await worker.wait_for("e2e job running")
    worker.signal(signal.SIGTERM)
    await worker.wait_for("draining")

    refused = (409, {"retired": True, "reason": "draining"})
    assert await worker.unretire(f"Bearer {token}") == refused
    doc = await worker.document()
    assert (doc["state"], doc["draining"], doc["active_jobs"]) == ("draining", True, 1)
    assert await worker.status("/readyz") == 503
    assert await worker.wait_exit(within_s=60) == 0
    assert worker.find("job succeeded", job_id=run["job_id"])
    assert worker.find("refused to withdraw the retirement", reason="draining")


async def test_retire_route_is_absent_without_a_token(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for method in ("POST", "DELETE"):
            async with session.request(method, f"http://127.0.0.1:{worker.port}/retire") as resp:
                assert resp.status == 404, method


async def test_memory_limit_ends_a_job_once_however_long_it_takes_to_exit(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts",
        livekit,
        agent_name=agent_name,
        env={"AGENT_JOB_MEMORY_LIMIT_MB": "150", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "3"},
    )
    # a job that blocks its event loop cannot hear the request to end: it is killed after 3 s,
    # six memory checks later
    await livekit.dispatch(agent_name, room_name(), json.dumps({"hog_mb": 300, "block_s": 30}))
    [run] = await worker.wait_for("e2e job running")
    [failed] = await worker.wait_for("job failed", job_id=run["job_id"], within_s=20)
    assert failed["reason"] == "memory_limit"
    ended = worker.find("job exceeded its memory limit, ending it", job_id=run["job_id"])
    assert len(ended) == 1


async def test_job_above_memory_warn_is_logged_and_keeps_running(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(
        f"{AGENTS}:opts", livekit, agent_name=agent_name, env={"AGENT_JOB_MEMORY_WARN_MB": "120"}
    )
    await livekit.dispatch(agent_name, room_name(), json.dumps({"hog_mb": 150, "sleep_s": 3}))
    [run] = await worker.wait_for("e2e job running")
    [warned] = await worker.wait_for("job is using a lot of memory", job_id=run["job_id"])
    assert float(str(warned["rss_mb"])) > 120
    await worker.wait_for("job succeeded", job_id=run["job_id"])
