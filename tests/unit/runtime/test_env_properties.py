"""Properties of the AGENT_* parser: whatever the environment holds, it never crashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_runtime.options import InvalidOption, WorkerOptions, apply_overrides, options_from_env

# hypothesis properties: many examples (2.7 s measured for the slowest on a shared 2-core machine)
pytestmark = pytest.mark.timeout(30)

VARIABLES = [
    "AGENT_NAME",
    "AGENT_WORKER_TYPE",
    "AGENT_LOAD_THRESHOLD",
    "AGENT_DRAIN_TIMEOUT_S",
    "AGENT_NUM_IDLE_PROCESSES",
    "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S",
    "AGENT_INITIALIZE_PROCESS_TIMEOUT_S",
    "AGENT_JOB_MEMORY_WARN_MB",
    "AGENT_JOB_MEMORY_LIMIT_MB",
    "AGENT_PERMISSIONS",
    "AGENT_HOST",
    "AGENT_PORT",
    "AGENT_MAX_RETRY",
    "AGENT_RETIRE_TIMEOUT_S",
    "POD_IP",
    "LIVEKIT_URL",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
permission_json = st.dictionaries(
    st.sampled_from(["can_publish", "can_subscribe", "hidden", "can_publish_sources", "x"]),
    json_values,
    max_size=4,
).map(json.dumps)
values = st.text(max_size=12) | st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{0,3})?", fullmatch=True)
environments = st.dictionaries(
    st.sampled_from(VARIABLES), values | permission_json, max_size=len(VARIABLES)
)


async def entrypoint(ctx: object) -> None:
    """A stand-in entrypoint."""


@settings(max_examples=300, deadline=None)
@given(environments)
def test_any_environment_gives_options_or_an_error_naming_a_variable(env: dict[str, str]) -> None:
    error = ""
    try:
        apply_overrides(WorkerOptions(entrypoint), options_from_env(env))
    except InvalidOption as exc:
        error = str(exc)
    assert not error or any(error.startswith(var) for var in VARIABLES), error
