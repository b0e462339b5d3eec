"""Settings: the spec's options read from AGENT_* and POD_IP; a malformed one is named, never
raised, and leaves the worker's own value in place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_companion import settings as companion_settings
from agentworker_companion.settings import Settings, from_environ

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

VARIABLES = (
    "AGENT_HOST",
    "POD_IP",
    "AGENT_PORT",
    "AGENT_CONTROL_TOKEN",
    "AGENT_RETIRE_TIMEOUT_S",
    "AGENT_NAME",
    "AGENT_WORKER_TYPE",
    "AGENT_LOAD_THRESHOLD",
    "AGENT_DRAIN_TIMEOUT_S",
    "AGENT_NUM_IDLE_PROCESSES",
    "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S",
    "AGENT_INITIALIZE_PROCESS_TIMEOUT_S",
    "AGENT_JOB_MEMORY_WARN_MB",
    "AGENT_JOB_MEMORY_LIMIT_MB",
    "AGENT_MAX_RETRY",
    "AGENT_PERMISSIONS",
    "AGENT_AGENTWORKER",
)


def test_an_empty_environment_keeps_every_default() -> None:
    assert from_environ({}) == Settings()
    assert (Settings().port, Settings().retire_timeout_s) == (8081, 60.0)


def test_empty_values_count_as_unset() -> None:
    assert from_environ(dict.fromkeys(VARIABLES, "")) == Settings()


@pytest.mark.parametrize(
    ("var", "raw", "attribute", "expected"),
    [
        ("AGENT_PORT", "9090", "port", 9090),
        ("AGENT_PORT", "9090.0", "port", 9090),
        ("AGENT_RETIRE_TIMEOUT_S", "2.5", "retire_timeout_s", 2.5),
        ("AGENT_LOAD_THRESHOLD", "0.85", "load_threshold", 0.85),
        ("AGENT_DRAIN_TIMEOUT_S", "5400", "drain_timeout_s", 5400),
        ("AGENT_DRAIN_TIMEOUT_S", "1.5", "drain_timeout_s", 2),
        ("AGENT_NUM_IDLE_PROCESSES", "0", "num_idle_processes", 0),
        ("AGENT_SHUTDOWN_PROCESS_TIMEOUT_S", "120", "shutdown_process_timeout_s", 120.0),
        ("AGENT_INITIALIZE_PROCESS_TIMEOUT_S", "4.5", "initialize_process_timeout_s", 4.5),
        ("AGENT_JOB_MEMORY_WARN_MB", "300", "job_memory_warn_mb", 300.0),
        ("AGENT_JOB_MEMORY_LIMIT_MB", "900.5", "job_memory_limit_mb", 900.5),
        ("AGENT_MAX_RETRY", "40", "max_retry", 40),
        ("AGENT_NAME", "support", "agent_name", "support"),
        ("AGENT_WORKER_TYPE", "PUBLISHER", "worker_type", "PUBLISHER"),
        ("AGENT_WORKER_TYPE", "room", "worker_type", "ROOM"),
        ("AGENT_AGENTWORKER", "team-a/support", "agentworker", "team-a/support"),
        ("AGENT_CONTROL_TOKEN", "s3cret", "control_token", "s3cret"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("AGENT_") else None,
)
def test_a_variable_sets_its_option(var: str, raw: str, attribute: str, expected: object) -> None:
    found = from_environ({var: raw})
    value = getattr(found, attribute)
    assert (value, type(value)) == (expected, type(expected))
    assert found.problems == ()


def test_drain_timeout_is_rounded_up_to_whole_seconds_for_livekit_agents() -> None:
    assert from_environ({"AGENT_DRAIN_TIMEOUT_S": "0.001"}).drain_timeout_s == 1


def test_the_contract_address_is_agent_host_else_pod_ip_else_every_interface() -> None:
    assert from_environ({"AGENT_HOST": "127.0.0.1", "POD_IP": "10.0.0.7"}).host == "127.0.0.1"
    assert from_environ({"POD_IP": "10.0.0.7"}).host == "10.0.0.7"
    assert from_environ({}).host == ""


@pytest.mark.parametrize(
    ("var", "raw", "attribute"),
    [
        ("AGENT_LOAD_THRESHOLD", "high", "load_threshold"),
        ("AGENT_LOAD_THRESHOLD", "-0.1", "load_threshold"),
        ("AGENT_LOAD_THRESHOLD", "nan", "load_threshold"),
        ("AGENT_LOAD_THRESHOLD", "inf", "load_threshold"),
        ("AGENT_DRAIN_TIMEOUT_S", "30m", "drain_timeout_s"),
        ("AGENT_NUM_IDLE_PROCESSES", "1.5", "num_idle_processes"),
        ("AGENT_MAX_RETRY", "-1", "max_retry"),
        ("AGENT_JOB_MEMORY_LIMIT_MB", "1Gi", "job_memory_limit_mb"),
        ("AGENT_RETIRE_TIMEOUT_S", "1e400", "retire_timeout_s"),
        ("AGENT_PORT", "http", "port"),
        ("AGENT_PORT", "0", "port"),
        ("AGENT_PORT", "65536", "port"),
        ("AGENT_PORT", "1e300", "port"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("AGENT_") else None,
)
def test_a_malformed_number_is_named_and_the_default_stays(
    var: str, raw: str, attribute: str
) -> None:
    found = from_environ({var: raw})
    assert getattr(found, attribute) == getattr(Settings(), attribute)
    assert len(found.problems) == 1
    assert found.problems[0].startswith(var)


def test_a_problem_never_repeats_the_value_it_may_be_a_secret() -> None:
    found = from_environ(
        {
            "AGENT_MAX_RETRY": "hunter2",
            "AGENT_WORKER_TYPE": "hunter3",
            "AGENT_PERMISSIONS": "hunter4",
        }
    )
    assert len(found.problems) == 3
    assert not any("hunter" in problem for problem in found.problems)


def test_a_worker_type_livekit_agents_lacks_is_named_and_the_workers_own_stays() -> None:
    found = from_environ({"AGENT_WORKER_TYPE": "PARTICIPANT"})
    assert found.worker_type == ""
    assert found.problems == (
        "AGENT_WORKER_TYPE PARTICIPANT is not one livekit-agents has (ROOM, PUBLISHER); "
        "the worker's own type stays",
    )


def test_permissions_are_read_from_the_operators_json() -> None:
    raw = '{"can_publish": false, "can_subscribe": true, "hidden": true}'
    found = from_environ({"AGENT_PERMISSIONS": raw})
    assert found.permissions == {"can_publish": False, "can_subscribe": True, "hidden": True}
    assert found.problems == ()


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[true]",
        '{"can_publish": "yes"}',
        '{"can_publish": 1}',
        '{"can_publish_sources": []}',
        '{"canPublish": true}',
    ],
    ids=["not-json", "not-an-object", "a-string", "a-number", "an-unknown-key", "camel-case"],
)
def test_malformed_permissions_are_named_and_the_workers_own_stay(raw: str) -> None:
    found = from_environ({"AGENT_PERMISSIONS": raw})
    assert found.permissions is None
    assert len(found.problems) == 1
    assert found.problems[0].startswith("AGENT_PERMISSIONS is not a JSON object")


def test_every_problem_is_reported_at_once() -> None:
    found = from_environ({"AGENT_PORT": "x", "AGENT_MAX_RETRY": "x", "AGENT_LOAD_THRESHOLD": "x"})
    assert [problem.split()[0] for problem in found.problems] == [
        "AGENT_PORT",
        "AGENT_LOAD_THRESHOLD",
        "AGENT_MAX_RETRY",
    ]


def test_the_control_token_is_hidden_from_repr() -> None:
    assert "s3cret" not in repr(from_environ({"AGENT_CONTROL_TOKEN": "s3cret"}))


def test_the_worker_types_are_livekit_agents_own() -> None:
    assert companion_settings.WORKER_TYPES == ("ROOM", "PUBLISHER")


@pytest.mark.timeout(10)  # a property test: many examples, on a shared machine
@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(VARIABLES), st.text(max_size=30), max_size=8))
def test_from_environ_never_raises_and_keeps_its_ranges(environ: dict[str, str]) -> None:
    found = from_environ(environ)
    assert 1 <= found.port <= 65535
    assert found.retire_timeout_s >= 0
    for value in (found.load_threshold, found.drain_timeout_s, found.max_retry):
        assert value is None or value >= 0
    assert found.worker_type in ("", "ROOM", "PUBLISHER")
