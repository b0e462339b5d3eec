"""WorkerOptions: the seeds' defaults, validation naming the option, and AGENT_* parsing."""

from __future__ import annotations

import math

import pytest

from worker_runtime.options import (
    InvalidOption,
    WorkerOptions,
    WorkerPermissions,
    WorkerType,
    apply_overrides,
    options_from_env,
    parse_log_level,
)

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


async def entrypoint(ctx: object) -> None:
    """A stand-in entrypoint."""


def test_defaults_follow_the_seeds() -> None:
    opts = WorkerOptions(entrypoint)
    assert opts.load_threshold == 0.7
    assert opts.drain_timeout == 30 * 60
    assert opts.shutdown_process_timeout == 60
    assert opts.worker_type is WorkerType.ROOM
    assert opts.request_fnc is None
    assert opts.agent_name == ""
    assert opts.num_idle_processes == 3
    assert opts.max_retry == 16
    assert opts.retire_timeout == 60
    assert opts.port == 8081
    assert opts.permissions == WorkerPermissions()
    assert opts.http_proxy is None  # HTTPS_PROXY, HTTP_PROXY and NO_PROXY decide


def test_api_secret_is_hidden_from_repr() -> None:
    opts = WorkerOptions(entrypoint, api_key="key", api_secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(opts)
    assert "key" in repr(opts)


INVALID = [
    ("entrypoint_fnc", {"entrypoint_fnc": "not callable"}),
    ("request_fnc", {"request_fnc": 3}),
    ("prewarm_fnc", {"prewarm_fnc": "x"}),
    ("load_fnc", {"load_fnc": 0.5}),
    ("load_threshold", {"load_threshold": 0}),
    ("load_threshold", {"load_threshold": -0.1}),
    ("load_threshold", {"load_threshold": math.nan}),
    ("load_threshold", {"load_threshold": "0.7"}),
    ("drain_timeout", {"drain_timeout": -1}),
    ("drain_timeout", {"drain_timeout": math.inf}),
    ("shutdown_process_timeout", {"shutdown_process_timeout": 0}),
    ("initialize_process_timeout", {"initialize_process_timeout": -5}),
    ("job_memory_warn_mb", {"job_memory_warn_mb": -1}),
    ("job_memory_limit_mb", {"job_memory_limit_mb": "big"}),
    ("num_idle_processes", {"num_idle_processes": -1}),
    ("num_idle_processes", {"num_idle_processes": 1.5}),
    ("num_idle_processes", {"num_idle_processes": True}),
    ("max_retry", {"max_retry": -2}),
    ("retire_timeout", {"retire_timeout": 0}),
    ("retire_timeout", {"retire_timeout": math.inf}),
    ("worker_type", {"worker_type": "ROOM"}),
    ("permissions", {"permissions": {"can_publish": True}}),
    ("agent_name", {"agent_name": 7}),
    ("ws_url", {"ws_url": "ftp://example"}),
    ("api_key", {"api_key": None}),
    ("api_secret", {"api_secret": 12}),
    ("http_proxy", {"http_proxy": "proxy:3128"}),
    ("http_proxy", {"http_proxy": "socks5://proxy:1080"}),
    ("http_proxy", {"http_proxy": "http://"}),
    ("http_proxy", {"http_proxy": "http://proxy:port"}),
    ("http_proxy", {"http_proxy": 3128}),
    ("host", {"host": 1}),
    ("port", {"port": 70000}),
    ("port", {"port": -1}),
    ("log_level", {"log_level": "VERBOSE"}),
    ("log_level", {"log_level": 10}),
    ("preload_modules", {"preload_modules": "torch"}),
    ("preload_modules", {"preload_modules": ("",)}),
]


@pytest.mark.parametrize(
    ("option", "kwargs"), INVALID, ids=[f"{o}-{i}" for i, (o, _) in enumerate(INVALID)]
)
def test_invalid_option_fails_at_construction_naming_it(
    option: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {"entrypoint_fnc": entrypoint, **kwargs}
    with pytest.raises(InvalidOption, match=rf"^{option}:"):
        WorkerOptions(**args)  # type: ignore[arg-type]  # deliberately wrong types


def test_secret_value_never_appears_in_its_error() -> None:
    with pytest.raises(InvalidOption) as info:
        WorkerOptions(entrypoint, api_secret=12)  # type: ignore[arg-type]  # deliberately wrong
    assert "12" not in str(info.value)


def test_proxy_password_is_hidden_from_repr_and_errors() -> None:
    opts = WorkerOptions(entrypoint, http_proxy="http://user:pr0xy-pw@proxy:3128")
    assert "pr0xy-pw" not in repr(opts)
    with pytest.raises(InvalidOption, match=r"^http_proxy: 'socks5://\*\*\*@proxy:1080'") as info:
        WorkerOptions(entrypoint, http_proxy="socks5://user:pr0xy-pw@proxy:1080")
    assert "pr0xy-pw" not in str(info.value)


@pytest.mark.parametrize("proxy", ["", "http://proxy:3128", "https://user:pw@proxy.corp:8443"])
def test_http_proxy_takes_a_proxy_url_or_empty_for_direct(proxy: str) -> None:
    assert WorkerOptions(entrypoint, http_proxy=proxy).http_proxy == proxy


def test_invalid_permission_names_the_field() -> None:
    with pytest.raises(InvalidOption, match=r"^permissions.hidden:"):
        WorkerPermissions(hidden="yes")  # type: ignore[arg-type]  # deliberately wrong


def test_lists_are_taken_as_tuples_as_livekit_agents_types_them() -> None:
    opts = WorkerOptions(entrypoint, preload_modules=["json"])  # type: ignore[arg-type]  # a list
    assert opts.preload_modules == ("json",)
    perms = WorkerPermissions(can_publish_sources=[1, 2])  # type: ignore[arg-type]  # a list
    assert perms.can_publish_sources == (1, 2)
    assert hash(perms) == hash(WorkerPermissions(can_publish_sources=(1, 2)))


def test_log_level_in_code_is_any_case() -> None:
    assert WorkerOptions(entrypoint, log_level="debug").log_level == "debug"


def test_infinite_load_threshold_is_allowed() -> None:
    assert WorkerOptions(entrypoint, load_threshold=math.inf).load_threshold == math.inf


def test_every_agent_variable_is_read() -> None:
    env = {
        "AGENT_NAME": "support",
        "AGENT_WORKER_TYPE": "publisher",
        "AGENT_LOAD_THRESHOLD": "0.5",
        "AGENT_DRAIN_TIMEOUT_S": "120",
        "AGENT_NUM_IDLE_PROCESSES": "2",
        "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "5",
        "AGENT_INITIALIZE_PROCESS_TIMEOUT_S": "7.5",
        "AGENT_JOB_MEMORY_WARN_MB": "500",
        "AGENT_JOB_MEMORY_LIMIT_MB": "800",
        "AGENT_PERMISSIONS": '{"can_publish": false, "hidden": true}',
        "AGENT_HOST": "127.0.0.9",
        "AGENT_PORT": "9000",
        "AGENT_MAX_RETRY": "3",
        "AGENT_RETIRE_TIMEOUT_S": "2.5",
        "AGENT_LOG_LEVEL": "debug",
        "LIVEKIT_URL": "ws://127.0.0.1:7880",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret",
    }
    opts = apply_overrides(WorkerOptions(entrypoint), options_from_env(env))
    assert opts.agent_name == "support"
    assert opts.worker_type is WorkerType.PUBLISHER
    assert opts.load_threshold == 0.5
    assert opts.drain_timeout == 120
    assert opts.num_idle_processes == 2
    assert opts.shutdown_process_timeout == 5
    assert opts.initialize_process_timeout == 7.5
    assert opts.job_memory_warn_mb == 500
    assert opts.job_memory_limit_mb == 800
    assert opts.permissions == WorkerPermissions(can_publish=False, hidden=True)
    assert (opts.host, opts.port, opts.max_retry) == ("127.0.0.9", 9000, 3)
    assert opts.retire_timeout == 2.5
    assert opts.log_level == "debug"
    assert (opts.ws_url, opts.api_key, opts.api_secret) == ("ws://127.0.0.1:7880", "key", "secret")


def test_unset_variables_change_nothing() -> None:
    assert options_from_env({}) == {}


def test_pod_ip_is_the_host_unless_agent_host_is_set() -> None:
    assert options_from_env({"POD_IP": "127.0.3.4"})["host"] == "127.0.3.4"
    both = {"POD_IP": "127.0.3.4", "AGENT_HOST": "127.0.0.1"}
    assert options_from_env(both)["host"] == "127.0.0.1"


MALFORMED = [
    ("AGENT_LOAD_THRESHOLD", "high"),
    ("AGENT_DRAIN_TIMEOUT_S", "30m"),
    ("AGENT_NUM_IDLE_PROCESSES", "two"),
    ("AGENT_SHUTDOWN_PROCESS_TIMEOUT_S", "x"),
    ("AGENT_INITIALIZE_PROCESS_TIMEOUT_S", "x"),
    ("AGENT_JOB_MEMORY_WARN_MB", "1GB"),
    ("AGENT_JOB_MEMORY_LIMIT_MB", "1GB"),
    ("AGENT_PORT", "80.5"),
    ("AGENT_MAX_RETRY", "many"),
    ("AGENT_RETIRE_TIMEOUT_S", "1m"),
    ("AGENT_WORKER_TYPE", "CITY"),
    ("AGENT_PERMISSIONS", "{not json"),
    ("AGENT_PERMISSIONS", "[1, 2]"),
    ("AGENT_PERMISSIONS", '{"can_fly": true}'),
    ("AGENT_PERMISSIONS", '{"hidden": "yes"}'),
    ("AGENT_PERMISSIONS", '{"can_publish_sources": 5}'),
    ("AGENT_PERMISSIONS", '{"can_publish_sources": ["mic"]}'),
]


@pytest.mark.parametrize(("var", "raw"), MALFORMED, ids=[f"{v}={r}" for v, r in MALFORMED])
def test_malformed_variable_names_it(var: str, raw: str) -> None:
    with pytest.raises(InvalidOption, match=rf"^{var}"):
        options_from_env({var: raw})


OUT_OF_RANGE = [
    ("AGENT_LOAD_THRESHOLD", "-1"),
    ("AGENT_DRAIN_TIMEOUT_S", "-5"),
    ("AGENT_NUM_IDLE_PROCESSES", "-1"),
    ("AGENT_PORT", "99999"),
    ("AGENT_RETIRE_TIMEOUT_S", "0"),
    ("AGENT_LOG_LEVEL", "LOUD"),
    ("LIVEKIT_URL", "ftp://nope"),
]


@pytest.mark.parametrize(("var", "raw"), OUT_OF_RANGE, ids=[f"{v}={r}" for v, r in OUT_OF_RANGE])
def test_out_of_range_variable_names_it(var: str, raw: str) -> None:
    with pytest.raises(InvalidOption, match=rf"^{var} "):
        apply_overrides(WorkerOptions(entrypoint), options_from_env({var: raw}))


@pytest.mark.parametrize("raw", ["debug", "INFO", " Warning ", "error", "CRITICAL"])
def test_log_levels_are_case_insensitive(raw: str) -> None:
    assert parse_log_level(raw) == raw.strip().upper()


def test_unknown_log_level_is_rejected() -> None:
    with pytest.raises(InvalidOption, match="--log-level"):
        parse_log_level("VERBOSE")
