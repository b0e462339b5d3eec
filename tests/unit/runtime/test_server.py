"""AgentServer: livekit-agents' current names, mapped onto WorkerOptions, refusals that say why."""

from __future__ import annotations

import enum
import importlib
import math
import pickle
from typing import Any

import pytest

from worker_runtime import (
    AgentServer,
    AgentServerPermissions,
    JobContext,
    JobProcess,
    JobRequest,
    ServerType,
    WorkerOptions,
    WorkerPermissions,
    WorkerType,
    cli,
)
from worker_runtime.job import SessionEnd
from worker_runtime.options import InvalidOption, apply_overrides, options_from_env
from worker_runtime.server import server_of

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


async def my_agent(ctx: JobContext) -> None:
    """A stand-in entrypoint."""


async def other_agent(ctx: JobContext) -> None:
    """Another stand-in entrypoint."""


async def on_request(req: JobRequest) -> None:
    await req.accept()


async def write_report(ctx: JobContext) -> None:
    """A stand-in on_session_end."""


def prewarm(proc: JobProcess) -> None:
    proc.userdata["model"] = "loaded"


def no_load() -> float:
    return 0.0


class JobExecutorType(enum.Enum):
    """livekit-agents' enum of the same name, as an agent file would pass it."""

    PROCESS = "process"
    THREAD = "thread"


def registered(server: AgentServer) -> WorkerOptions:
    server.rtc_session(my_agent)
    return server.worker_options()


def test_decorator_returns_the_function_and_sets_name_type_and_request_handler() -> None:
    server = AgentServer()
    decorate = server.rtc_session(
        agent_name="survey", type=ServerType.PUBLISHER, on_request=on_request
    )
    assert decorate(my_agent) is my_agent
    opts = server.worker_options()
    assert (opts.entrypoint_fnc, opts.agent_name) == (my_agent, "survey")
    assert (opts.worker_type, opts.request_fnc) == (WorkerType.PUBLISHER, on_request)


def test_bare_decorator_registers_the_function() -> None:
    server = AgentServer()
    assert server.rtc_session(my_agent) is my_agent
    assert server.worker_options().entrypoint_fnc is my_agent


def test_a_server_without_arguments_has_worker_options_defaults() -> None:
    assert registered(AgentServer()) == WorkerOptions(my_agent)


def test_docs_names_are_the_runtime_types() -> None:
    assert ServerType is WorkerType
    assert AgentServerPermissions is WorkerPermissions


SAME_NAME: list[tuple[str, object]] = [
    ("load_threshold", 0.9),
    ("load_threshold", math.inf),
    ("job_memory_warn_mb", 500.0),
    ("job_memory_limit_mb", 800.0),
    ("drain_timeout", 600),
    ("num_idle_processes", 1),
    ("shutdown_process_timeout", 5.0),
    ("initialize_process_timeout", 20.0),
    ("permissions", WorkerPermissions(can_publish=False, hidden=True)),
    ("max_retry", 3),
    ("ws_url", "ws://127.0.0.1:7880"),
    ("api_key", "key"),
    ("api_secret", "secret"),
    ("http_proxy", "http://proxy:3128"),
    ("http_proxy", ""),
    ("host", "127.0.0.2"),
    ("port", 0),
    ("load_fnc", no_load),
    ("log_level", "DEBUG"),
    ("preload_modules", ("json",)),
]


@pytest.mark.parametrize(
    ("name", "value"), SAME_NAME, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SAME_NAME)]
)
def test_server_option_lands_on_the_worker_option_of_its_name(name: str, value: object) -> None:
    args: dict[str, Any] = {name: value}
    assert getattr(registered(AgentServer(**args)), name) == value


def test_setup_fnc_is_prewarm_fnc_as_argument_and_as_property() -> None:
    assert registered(AgentServer(setup_fnc=prewarm)).prewarm_fnc is prewarm
    server = AgentServer()
    server.setup_fnc = prewarm
    server.load_fnc = no_load
    opts = registered(server)
    assert (opts.prewarm_fnc, opts.load_fnc) == (prewarm, no_load)
    assert (server.setup_fnc, server.load_fnc) == (prewarm, no_load)


def test_a_list_of_preload_modules_is_taken_as_a_tuple() -> None:
    assert registered(AgentServer(preload_modules=["json", "math"])).preload_modules == (
        "json",
        "math",
    )


def test_none_and_an_empty_host_mean_the_runtime_default() -> None:
    server = AgentServer(
        ws_url=None, api_key=None, api_secret=None, host="", setup_fnc=None, preload_modules=None
    )
    assert registered(server) == WorkerOptions(my_agent)


def test_what_the_runtime_does_anyway_is_accepted() -> None:
    server = AgentServer(
        job_executor_type=JobExecutorType.PROCESS,
        multiprocessing_context="forkserver",
        http_proxy=None,
        prometheus_port=None,
        prometheus_multiproc_dir=None,
    )
    assert registered(server) == WorkerOptions(my_agent)


REFUSED: list[tuple[str, object, str]] = [
    ("job_executor_type", JobExecutorType.THREAD, "its own"),
    ("multiprocessing_context", "spawn", "fork server"),
    ("prometheus_port", 9100, "/metrics"),
    ("prometheus_multiproc_dir", "/tmp/prom", "job processes"),
]


@pytest.mark.parametrize(("name", "value", "why"), REFUSED, ids=[n for n, _, _ in REFUSED])
def test_an_option_the_runtime_cannot_honour_is_refused_saying_why(
    name: str, value: object, why: str
) -> None:
    args: dict[str, Any] = {name: value}
    with pytest.raises(InvalidOption, match=rf"^{name}: ") as info:
        AgentServer(**args)
    assert why in str(info.value)


def test_on_simulation_end_is_refused_saying_why() -> None:
    with pytest.raises(InvalidOption, match=r"^on_simulation_end: .*lk simulate"):
        AgentServer().rtc_session(on_simulation_end=my_agent)


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="'load_treshold'"):
        AgentServer(load_treshold=0.5)  # type: ignore[call-arg]  # the typo is the point


def test_invalid_values_name_the_argument_the_user_wrote() -> None:
    with pytest.raises(InvalidOption, match=r"^setup_fnc: 3 is not callable"):
        AgentServer(setup_fnc=3)  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(InvalidOption, match=r"^load_threshold: "):
        AgentServer(load_threshold=0)
    with pytest.raises(InvalidOption, match=r"^session_end_timeout: "):
        AgentServer(session_end_timeout=math.nan)
    with pytest.raises(InvalidOption, match=r"^type: 'ROOM' is not a WorkerType"):
        AgentServer().rtc_session(my_agent, type="ROOM")  # type: ignore[call-overload]  # wrong
    with pytest.raises(InvalidOption, match=r"^on_request: "):
        AgentServer().rtc_session(my_agent, on_request=5)  # type: ignore[call-overload]  # wrong
    server = AgentServer()
    with pytest.raises(InvalidOption, match=r"^setup_fnc: "):
        server.setup_fnc = "prewarm"  # type: ignore[assignment]  # deliberately wrong


def test_a_second_rtc_session_is_refused() -> None:
    server = AgentServer()
    server.rtc_session(my_agent)
    with pytest.raises(RuntimeError, match="one rtc_session"):
        server.rtc_session(other_agent)
    assert server.worker_options().entrypoint_fnc is my_agent


def test_a_server_without_rtc_session_has_no_options() -> None:
    with pytest.raises(InvalidOption, match=r"^rtc_session: no entrypoint registered"):
        AgentServer(load_threshold=0.5).worker_options()


def test_run_app_without_rtc_session_exits_two_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.run_app(AgentServer(), argv=["start"])
    assert info.value.code == 2
    assert "rtc_session" in capsys.readouterr().err


def test_agent_variables_win_over_server_options() -> None:
    server = AgentServer(load_threshold=0.9, drain_timeout=60, log_level="DEBUG")
    server.rtc_session(my_agent, agent_name="in-code", type=ServerType.PUBLISHER)
    env = {
        "AGENT_NAME": "from-operator",
        "AGENT_WORKER_TYPE": "ROOM",
        "AGENT_LOAD_THRESHOLD": "0.5",
        "AGENT_DRAIN_TIMEOUT_S": "900",
        "AGENT_LOG_LEVEL": "warning",
    }
    opts = apply_overrides(server.worker_options(), options_from_env(env))
    assert (opts.agent_name, opts.worker_type) == ("from-operator", WorkerType.ROOM)
    assert (opts.load_threshold, opts.drain_timeout, opts.log_level) == (0.5, 900, "warning")


def test_on_session_end_wraps_the_entrypoint_and_pickles_by_reference() -> None:
    server = AgentServer(session_end_timeout=7)
    assert server.rtc_session(my_agent, on_session_end=write_report) is my_agent
    entry = server.worker_options().entrypoint_fnc
    assert isinstance(entry, SessionEnd)
    assert (entry.entrypoint, entry.on_session_end, entry.timeout_s) == (my_agent, write_report, 7)
    assert entry.__module__ == my_agent.__module__  # the fork server preloads the agent's module
    copy = pickle.loads(pickle.dumps(entry))
    assert (copy.entrypoint, copy.on_session_end) == (my_agent, write_report)


def test_on_session_end_must_be_callable() -> None:
    with pytest.raises(InvalidOption, match=r"^on_session_end: "):
        AgentServer().rtc_session(on_session_end="report")  # type: ignore[call-overload]  # wrong


def test_from_server_options_runs_those_options() -> None:
    opts = WorkerOptions(my_agent, agent_name="legacy", prewarm_fnc=prewarm)
    server = AgentServer.from_server_options(opts)
    assert server.worker_options() is opts
    assert server.setup_fnc is prewarm


server = AgentServer(load_threshold=0.8)
session_ending = AgentServer()


@server.rtc_session()
async def decorated(ctx: JobContext) -> None:
    """Registered on this module's `server`."""


@session_ending.rtc_session(on_session_end=write_report)
async def decorated_with_report(ctx: JobContext) -> None:
    """Registered, wrapped, on this module's `session_ending`."""


def test_server_of_finds_the_server_that_registered_a_function() -> None:
    assert server_of(decorated) is server
    assert server_of(decorated_with_report) is session_ending
    assert server_of(session_ending.worker_options().entrypoint_fnc) is session_ending
    assert server_of(my_agent) is None


def test_active_jobs_are_those_of_the_attached_worker() -> None:
    class FakeWorker:
        def __init__(self) -> None:
            self.active_jobs: list[Any] = ["job-1", "job-2"]

    local, worker = AgentServer(), FakeWorker()
    assert local.active_jobs == []
    local.attach(worker)
    assert local.active_jobs is worker.active_jobs


def parse(*argv: str) -> Any:
    return cli.parse_args(list(argv), with_target=True)


@pytest.mark.parametrize(
    "target",
    ["examples.server.load:server", "examples.server.load:my_agent"],
    ids=["the-server", "the-decorated-function"],
)
def test_a_target_naming_a_server_or_its_function_runs_with_its_options(target: str) -> None:
    opts = cli.options_from_target(parse("start", target))
    assert (opts.load_threshold, opts.load_fnc is not None) == (0.9, True)


DOCS_EXAMPLES: list[tuple[str, dict[str, object]]] = [
    ("entrypoint", {}),
    ("request_handler", {"request_fnc": "request_fnc"}),
    ("prewarm", {"prewarm_fnc": "prewarm"}),
    ("load", {"load_threshold": 0.9, "load_fnc": "compute_load"}),
    ("permissions", {"agent_name": "note-taker", "permissions.can_publish": False}),
    ("session_end", {"entrypoint_fnc.on_session_end": "write_report"}),
]


@pytest.mark.parametrize(("name", "expected"), DOCS_EXAMPLES, ids=[n for n, _ in DOCS_EXAMPLES])
def test_docs_example_registers_its_options(name: str, expected: dict[str, object]) -> None:
    module = importlib.import_module(f"examples.server.{name}")
    opts = module.server.worker_options()
    assert server_of(module.my_agent) is module.server
    for path, want in expected.items():
        value: object = opts
        for part in path.split("."):
            value = getattr(value, part)
        assert (getattr(value, "__name__", value) if isinstance(want, str) else value) == want
