"""Hooks: the companion wraps AgentServer.run and drain on a tested livekit-agents line, applies
the spec's options before run() reads them, serves the contract, and retires through
livekit-agents' own drain flag (refused while a job runs or is on its way)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from livekit.protocol import agent as agent_pb

import agentworker_companion
from agentworker_companion import hooks, settings, state
from tests.unit.companion import fake_livekit
from tests.unit.companion.fake_livekit import FakeAgentServer, ProcStatus, free_port

pytestmark = [
    pytest.mark.timeout(2),  # the unit tier stays fast: 2 s a test at most
]

TOKEN = "t0ken"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = aiohttp.ClientTimeout(total=1)


@pytest.fixture(autouse=True)
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The operator's variables, on a free loopback port; nothing else of AGENT_* leaks in."""
    for name in list(os.environ):
        if name.startswith("AGENT_") or name == "POD_IP":
            monkeypatch.delenv(name)
    chosen = free_port()
    monkeypatch.setenv("AGENT_HOST", "127.0.0.1")
    monkeypatch.setenv("AGENT_PORT", str(chosen))
    monkeypatch.setenv("AGENT_CONTROL_TOKEN", TOKEN)
    return chosen


@pytest.fixture
def module() -> Any:
    """livekit.agents.worker 1.8 with the companion installed."""
    installed = fake_livekit.worker_module("1.8.9")
    hooks.install(installed)
    return installed


@contextlib.asynccontextmanager
async def running(server: FakeAgentServer) -> AsyncIterator[asyncio.Task[Any]]:
    """server.run() (as wrapped) until the block ends, then aclose() and its end."""
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 1)
        yield task
    finally:
        await server.aclose()
        with contextlib.suppress(RuntimeError):
            await asyncio.wait_for(task, 1)


def companion_of(server: FakeAgentServer) -> hooks.Companion:
    found = getattr(server, hooks.ATTRIBUTE)
    assert isinstance(found, hooks.Companion)
    return found


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def handshake(port: int, method: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/retire"
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.request(method, url, headers=AUTHORIZED) as response,
    ):
        return response.status, await response.json()


# -- install ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.3.2", "1.5.0", "1.7.1", "2.0.0", "", "main"])
def test_install_steps_aside_outside_the_tested_lines(
    version: str, caplog: pytest.LogCaptureFixture
) -> None:
    untested = fake_livekit.worker_module(version)
    run, drain = untested.AgentServer.run, untested.AgentServer.drain
    hooks.install(untested)
    assert (untested.AgentServer.run, untested.AgentServer.drain) == (run, drain)
    assert "outside the tested lines (1.4, 1.6, 1.8)" in caplog.text
    assert (version or "(unknown version)") in caplog.text


@pytest.mark.parametrize("version", ["1.4.6", "1.6.10", "1.8.9", "1.8.0rc1"])
def test_install_wraps_run_and_drain_on_each_tested_line(version: str) -> None:
    tested = fake_livekit.worker_module(version)
    hooks.install(tested)
    assert tested.AgentServer.run.__wrapped__ is FakeAgentServer.run
    assert tested.AgentServer.drain.__wrapped__ is FakeAgentServer.drain
    assert FakeAgentServer.run.__name__ == tested.AgentServer.run.__name__


def test_the_tested_lines_are_the_ones_the_package_names() -> None:
    assert agentworker_companion.TESTED_LINES == ((1, 4), (1, 6), (1, 8))
    assert hooks.version_line("1.10.2") == (1, 10)
    assert hooks.version_line("1") is None
    assert hooks.version_line("one.two") is None


@pytest.mark.parametrize("missing", hooks.CLASS_NEEDS)
def test_install_steps_aside_when_the_class_lacks_what_it_needs(
    missing: str, caplog: pytest.LogCaptureFixture
) -> None:
    present = {name: getattr(FakeAgentServer, name) for name in hooks.CLASS_NEEDS}
    changed = fake_livekit.worker_module("1.8.9")
    kept = {name: value for name, value in present.items() if name != missing}
    changed.__dict__["AgentServer"] = type("AgentServer", (), kept)
    hooks.install(changed)
    assert getattr(changed.AgentServer, "run", None) in (FakeAgentServer.run, None)
    assert getattr(changed.AgentServer, "drain", None) in (FakeAgentServer.drain, None)
    assert f"AgentServer lacks ['{missing}']" in caplog.text


def test_install_steps_aside_without_an_agent_server(caplog: pytest.LogCaptureFixture) -> None:
    bare = fake_livekit.worker_module("1.8.9")
    del bare.AgentServer
    hooks.install(bare)
    assert "steps aside: AgentServer lacks" in caplog.text


# -- options ----------------------------------------------------------------------------------


async def test_the_specs_options_are_applied_before_run_reads_them(
    module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AGENT_NAME": "support",
        "AGENT_WORKER_TYPE": "PUBLISHER",
        "AGENT_LOAD_THRESHOLD": "0.5",
        "AGENT_DRAIN_TIMEOUT_S": "90.5",
        "AGENT_NUM_IDLE_PROCESSES": "1",
        "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "30",
        "AGENT_INITIALIZE_PROCESS_TIMEOUT_S": "20",
        "AGENT_JOB_MEMORY_WARN_MB": "300",
        "AGENT_JOB_MEMORY_LIMIT_MB": "900",
        "AGENT_MAX_RETRY": "5",
        "AGENT_PERMISSIONS": json.dumps({"can_publish": False, "hidden": True}),
    }.items():
        monkeypatch.setenv(name, value)
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        seen = server.seen_by_run
    assert seen["_agent_name"] == "support"
    assert seen["_server_type"] is fake_livekit.ServerType.PUBLISHER
    assert (seen["_load_threshold"], seen["_drain_timeout"]) == (0.5, 91)
    assert (seen["_num_idle_processes"], seen["_max_retry"]) == (1, 5)
    assert (seen["_shutdown_process_timeout"], seen["_initialize_process_timeout"]) == (30.0, 20.0)
    assert (seen["_job_memory_warn_mb"], seen["_job_memory_limit_mb"]) == (300.0, 900.0)
    assert seen["_permissions"] == fake_livekit.WorkerPermissions(can_publish=False, hidden=True)


async def test_livekit_agents_own_health_server_moves_to_an_ephemeral_loopback_port(
    module: Any,
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        assert (server.seen_by_run["_host"], server.seen_by_run["_port"]) == ("127.0.0.1", 0)


async def test_without_the_specs_options_the_codes_own_stay(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    untouched = FakeAgentServer()
    async with running(server):
        seen = server.seen_by_run
    moved = {"_host", "_port"}
    assert {k: v for k, v in seen.items() if k not in moved} == {
        name: getattr(untouched, name) for name in hooks.SERVER_NEEDS if name not in moved
    }


async def test_a_malformed_variable_is_logged_and_the_codes_value_stays(
    module: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENT_MAX_RETRY", "many")
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        assert server.seen_by_run["_max_retry"] == 16
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "agentworker-companion: AGENT_MAX_RETRY is not a whole number of 0 or more; "
        "the worker's own value stays"
    ]


async def test_the_control_token_does_not_reach_the_job_processes_environment(
    module: Any, port: int
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        assert "AGENT_CONTROL_TOKEN" not in os.environ
        server.register()
        assert (await handshake(port, "POST"))[0] == 200


# -- serving ----------------------------------------------------------------------------------


async def test_the_contract_is_served_on_the_specs_port_while_run_runs(
    module: Any, port: int
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server) as run:
        assert await get(port, "/readyz") == (503, "not ready: starting")
        assert await get(port, "/healthz") == (200, "OK")
        server.register("AW_7")
        assert await get(port, "/readyz") == (200, "OK")
        status, text = await get(port, "/worker")
        doc = json.loads(text)
    assert await run == "run returned"
    assert status == 200
    assert (doc["worker_id"], doc["agent_name"], doc["worker_type"]) == (
        "AW_7",
        "from-code",
        "JT_ROOM",
    )
    assert (doc["sdk_version"], doc["protocol_version"]) == ("1.8.9", 1)
    assert doc["companion"] == agentworker_companion.__version__
    assert (doc["state"], doc["load_threshold"], doc["idle_processes"]) == ("available", 0.7, 0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")


async def test_the_contract_server_closes_when_run_fails(module: Any, port: int) -> None:
    server: FakeAgentServer = module.AgentServer()
    server.crash = True
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 1)
    assert (await get(port, "/healthz"))[0] == 200
    await server.aclose()
    with pytest.raises(RuntimeError, match="the worker crashed"):
        await asyncio.wait_for(task, 1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")


async def test_a_running_job_is_listed_with_its_room_and_agent_identity(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        server.launch("AJ_1")
        server.launch("AJ_2", identity="receptionist")
        server._proc_pool.processes.append(fake_livekit.Proc())  # a prewarmed, idle process
        companion = companion_of(server)
        first = state.worker_document(companion.facts())
        again = state.worker_document(companion.facts())
    jobs = first["jobs"]
    assert isinstance(jobs, list)
    assert [(j["id"], j["room"], j["identity"]) for j in jobs] == [
        ("AJ_1", "call-1", "agent-AJ_1"),
        ("AJ_2", "call-1", "receptionist"),
    ]
    assert again["jobs"] == jobs  # started_at is when it was first seen, not each time
    assert (first["active_jobs"], first["idle_processes"]) == (2, 1)


@pytest.mark.parametrize(
    ("load", "reserved", "expected"),
    [(0.6, 0, "available"), (0.65, 1, "full"), (0.7, 0, "full")],
    ids=["below", "a-job-on-its-way-fills-it", "at-the-threshold"],
)
async def test_full_is_livekit_agents_effective_load_at_its_threshold(
    module: Any, load: float, reserved: int, expected: str
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        server._worker_load, server._reserved_slots = load, reserved
        facts = companion_of(server).facts()
    assert (state.worker_state(facts), state.is_ready(facts)) == (expected, True)


async def test_in_dev_mode_the_threshold_is_infinite_and_the_worker_never_full(
    module: Any,
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        server._devmode, server._worker_load = True, 5.0
        doc = state.worker_document(companion_of(server).facts())
    assert (doc["state"], doc["load_threshold"]) == ("available", None)


@pytest.mark.parametrize("failure", ["connection", "inference"])
async def test_health_is_livekit_agents_own(module: Any, port: int, failure: str) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        assert (await get(port, "/healthz"))[0] == 200
        if failure == "connection":
            server._connection_failed = True
        else:
            server._inference_executor.alive = False
        assert await get(port, "/healthz") == (503, "unhealthy")


async def test_a_reconnecting_worker_is_not_registered(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        server._connecting = True
        facts = companion_of(server).facts()
    assert state.worker_state(facts) == "starting"


def test_before_run_the_worker_is_starting_with_nothing_to_count() -> None:
    module = fake_livekit.worker_module("1.6.10")
    server: FakeAgentServer = module.AgentServer()
    facts = hooks.Companion(server, module, "1.6.10", settings.Settings()).facts()
    assert (facts.running, facts.registered, facts.jobs, facts.idle_processes) == (
        False,
        False,
        (),
        0,
    )
    assert state.worker_state(facts) == "starting"
    assert facts.worker_type == "JT_ROOM"


def test_the_worker_type_is_named_as_livekit_protocol_names_it() -> None:
    module = fake_livekit.worker_module()
    server: FakeAgentServer = module.AgentServer()
    server._server_type = fake_livekit.ServerType.PUBLISHER
    facts = hooks.Companion(server, module, "1.8.9", settings.Settings()).facts()
    assert facts.worker_type == "JT_PUBLISHER"


# -- metrics ----------------------------------------------------------------------------------


async def test_jobs_are_counted_and_timed_from_their_assignment(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        assignment = agent_pb.JobAssignment(job=agent_pb.Job(id="AJ_1"))
        server._handle_assignment(assignment)
        ok = server.launch("AJ_1")
        failed = server.launch("AJ_2")  # assigned before the companion was there: not timed
        server.end(ok, ProcStatus.SUCCESS)
        server.end(failed, ProcStatus.FAILED)
        server._proc_pool.emit("process_closed", fake_livekit.Proc())  # an idle process ends
        registry = companion_of(server).metrics.registry
    assert server.assignments == [assignment]  # livekit-agents still handles it
    samples = {
        "agentworker_worker_jobs_started_total": 2.0,
        "agentworker_worker_jobs_succeeded_total": 1.0,
        "agentworker_worker_job_start_latency_seconds_count": 1.0,
    }
    for name, value in samples.items():
        assert registry.get_sample_value(name) == value, name
    failures = registry.get_sample_value(
        "agentworker_worker_jobs_failed_total", {"reason": "failed"}
    )
    assert failures == 1.0


# -- /worker's change stream ---------------------------------------------------------------

HELD_S = 0.1
"""How long a request must stay unanswered to count as held."""


async def document(port: int, query: str = "") -> dict[str, Any]:
    status, text = await get(port, f"/worker{query}")
    assert status == 200, text
    found: dict[str, Any] = json.loads(text)
    return found


async def held(task: asyncio.Task[dict[str, Any]]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=HELD_S)
    return not done


async def launch_a_job(server: FakeAgentServer) -> None:
    server.launch("AJ_1")


async def end_a_job(server: FakeAgentServer) -> None:
    server.end(server._proc_pool.processes[0], ProcStatus.SUCCESS)


async def prewarm_a_process(server: FakeAgentServer) -> None:
    proc = fake_livekit.Proc()
    server._proc_pool.processes.append(proc)
    server._proc_pool.emit("process_ready", proc)


async def fill_up(server: FakeAgentServer) -> None:
    await server.sample_load(0.8)  # livekit-agents' load task: above the 0.7 threshold


async def drain(server: FakeAgentServer) -> None:
    await server.drain()


async def retire(server: FakeAgentServer) -> None:
    assert await companion_of(server).retire() == ""


async def reconnect(server: FakeAgentServer) -> None:
    server._connecting = True  # no event: the next load sample shows it
    await server.sample_load(0.0)


@pytest.mark.parametrize(
    ("event", "changed"),
    [
        (launch_a_job, {"active_jobs": 1}),
        (end_a_job, {"active_jobs": 0}),
        (prewarm_a_process, {"idle_processes": 1}),
        (fill_up, {"state": "full"}),
        (drain, {"state": "draining"}),
        (retire, {"state": "retired"}),
        (reconnect, {"state": "starting"}),
    ],
    ids=["job-launched", "job-ended", "process-ready", "load-sample", "drain", "retire", "lost"],
)
async def test_a_held_poll_hears_of_livekit_agents_events_at_once(
    module: Any,
    port: int,
    event: Callable[[FakeAgentServer], Awaitable[None]],
    changed: dict[str, object],
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        if event is end_a_job:
            server.launch("AJ_1")
        before = await document(port)
        poll = asyncio.create_task(document(port, f"?after={before['generation']}&wait=30"))
        assert await held(poll)
        await event(server)
        after = await poll
    assert after["generation"] == before["generation"] + 1
    assert {key: after[key] for key in changed} == changed


async def test_registering_answers_a_held_poll(module: Any, port: int) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        before = await document(port)
        poll = asyncio.create_task(document(port, f"?after={before['generation']}&wait=30"))
        assert await held(poll)
        server.register("AW_7")
        after = await poll
    assert (before["state"], after["state"], after["worker_id"]) == (
        "starting",
        "available",
        "AW_7",
    )


async def test_a_load_sample_below_the_threshold_answers_no_poll(module: Any, port: int) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        before = await document(port)
        poll = asyncio.create_task(document(port, f"?after={before['generation']}&wait=0.3"))
        await server.sample_load(0.5)
        assert await held(poll)
        after = await poll
    assert (after["generation"], after["worker_load"]) == (before["generation"], 0.5)


async def test_the_first_load_sample_that_counts_a_new_job_answers_a_held_poll(
    module: Any, port: int
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        await server.sample_load(0.0)
        server.launch("AJ_1")
        listed = await document(port)
        assert (listed["active_jobs"], listed["worker_load"]) == (1, 0.0)
        poll = asyncio.create_task(document(port, f"?after={listed['generation']}&wait=30"))
        assert await held(poll)
        await server.sample_load(0.25)
        counted = await poll
        # a second sample with the same jobs is no news
        again = asyncio.create_task(document(port, f"?after={counted['generation']}&wait=0.3"))
        await server.sample_load(0.3)
        assert await held(again)
        unchanged = await again
    assert (counted["generation"], counted["worker_load"]) == (listed["generation"] + 1, 0.25)
    assert unchanged["generation"] == counted["generation"]


async def test_the_end_of_run_answers_the_held_polls(module: Any, port: int) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        before = await document(port)
        polls = [
            asyncio.create_task(document(port, f"?after={before['generation']}&wait=30"))
            for _ in range(3)
        ]
        assert await held(polls[0])
    answers = await asyncio.gather(*polls)
    assert {a["state"] for a in answers} == {"closed"}


# -- the handshake ------------------------------------------------------------------------------


async def test_retire_sets_livekit_agents_drain_flag_and_delete_clears_it(
    module: Any, port: int
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        assert await handshake(port, "POST") == (200, {"retired": True})
        assert server._draining is True
        assert server.status_updates == [True]  # LiveKit heard WS_FULL before the answer
        assert await get(port, "/readyz") == (503, "not ready: retired")
        assert await handshake(port, "DELETE") == (200, {"retired": False})
        assert server._draining is False
        assert server.status_updates == [True, False]
        assert await get(port, "/readyz") == (200, "OK")


@pytest.mark.parametrize("on_the_way", ["running", "reserved", "pending"])
async def test_retiring_is_refused_while_a_job_runs_or_is_on_its_way(
    module: Any, port: int, on_the_way: str
) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        if on_the_way == "running":
            server.launch("AJ_1")
        elif on_the_way == "reserved":
            server._reserved_slots = 1  # said "available", the user's request_fnc runs
        else:
            server._pending_assignments["AJ_1"] = object()  # accepted, awaiting assignment
        status, body = await handshake(port, "POST")
        assert (status, body["reason"]) == (409, "busy")
        assert server._draining is False
        assert server.status_updates == []


async def test_a_retirement_expires_and_the_worker_takes_jobs_again(
    module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RETIRE_TIMEOUT_S", "0.05")
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        companion = companion_of(server)
        assert await companion.retire() == ""
        for _ in range(100):  # bounded: 1 s at most
            if len(server.status_updates) == 2:
                break
            await asyncio.sleep(0.01)
        assert server.status_updates == [True, False]
        assert server._draining is False
        assert state.worker_state(companion.facts()) == "available"


async def test_sigterm_after_a_retirement_keeps_the_worker_out(module: Any, port: int) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        companion = companion_of(server)
        assert await companion.retire() == ""
        await server.drain()
        assert (server.drains, companion.expiry) == (1, None)  # no expiry to undo the drain
        status, body = await handshake(port, "DELETE")
        assert (status, body["reason"]) == (409, "draining")
        assert server._draining is True
        assert state.worker_state(companion.facts()) == "draining"


async def test_a_draining_worker_may_be_retired_as_it_is(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        await server.drain()
        companion = companion_of(server)
        assert await companion.retire() == ""
        assert (companion.retired, companion.expiry, server.status_updates) == (False, None, [True])


async def test_retiring_twice_is_yes_once(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        companion = companion_of(server)
        assert await companion.retire() == ""
        expiry = companion.expiry
        assert await companion.retire() == ""
        assert (server.status_updates, companion.expiry) == ([True], expiry)


async def test_withdrawing_when_not_retired_is_yes_and_sends_nothing(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        server.register()
        assert await companion_of(server).unretire() == ""
        assert (server._draining, server.status_updates) == (False, [])


async def test_a_closed_worker_refuses_both(module: Any) -> None:
    server: FakeAgentServer = module.AgentServer()
    async with running(server):
        companion = companion_of(server)
        server._closed = True
        assert (await companion.retire(), await companion.unretire()) == ("closed", "closed")


def test_retiring_before_run_sends_nothing_yet() -> None:
    module = fake_livekit.worker_module()
    server: FakeAgentServer = module.AgentServer()
    companion = hooks.Companion(server, module, "1.8.9", settings.Settings())

    async def retire_then_close() -> str:
        try:
            return await companion.retire()
        finally:
            await companion.aclose()

    assert asyncio.run(retire_then_close()) == ""
    assert (server._draining, server.status_updates) == (True, [])


# -- stepping aside -----------------------------------------------------------------------------


async def test_a_taken_port_makes_it_step_aside_and_livekit_agents_serves_there(
    module: Any, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    server: FakeAgentServer = module.AgentServer()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        async with running(server) as run:
            assert not hasattr(server, hooks.ATTRIBUTE)
            assert (server.seen_by_run["_host"], server.seen_by_run["_port"]) == (
                "127.0.0.1",
                port,
            )
            await server.drain()  # the unwrapped path still drains
            assert server.drains == 1
    assert await run == "run returned"
    assert f"cannot serve on 127.0.0.1:{port}" in caplog.text


async def test_a_server_lacking_an_internal_runs_untouched(
    module: Any, port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENT_NAME", "support")
    server: FakeAgentServer = module.AgentServer()
    del server._connecting
    async with running(server) as run:
        assert server.seen_by_run["_agent_name"] == "from-code"
        assert not hasattr(server, hooks.ATTRIBUTE)
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(port, "/healthz")
    assert await run == "run returned"
    assert "AgentServer lacks ['_connecting']" in caplog.text
