"""parse_spec: defaults applied once (and equal to the CRD's), errors that name field and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import given, settings

from agentworker_operator import spec as specs

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "agentworker.dev_agentworkers.yaml"

MINIMAL: dict[str, Any] = {
    "image": "ghcr.io/acme/agent:1",
    "entrypoint": "my_agent.main:entrypoint",
    "livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecret": {"name": "lk"}},
}


def set_path(raw: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """Set one dotted path in raw (creating parents) and return raw."""
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


def with_(path: str, value: object) -> dict[str, Any]:
    """A copy of MINIMAL with one dotted path set to value."""
    return set_path(yaml.safe_load(yaml.safe_dump(MINIMAL)), path, value)


def test_minimal_spec_gets_every_default() -> None:
    parsed = specs.parse_spec(MINIMAL)
    assert parsed.agent_name == ""
    assert parsed.worker_type is specs.WorkerType.ROOM
    assert parsed.load_threshold == 0.7
    assert parsed.drain_timeout_s == 1800.0
    assert parsed.num_idle_processes == 3
    assert parsed.shutdown_process_timeout_s == 60.0
    assert parsed.job_memory == specs.JobMemory(warn_mb=500, limit_mb=0)
    assert parsed.permissions == specs.Permissions()
    assert parsed.log_level is specs.LogLevel.INFO
    assert parsed.replicas == 1
    assert parsed.autoscaling == specs.Autoscaling()
    assert parsed.env == ()
    assert parsed.pod_template == specs.PodTemplate()


def _crd_defaults(schema: dict[str, Any], prefix: str = "spec") -> dict[str, object]:
    found: dict[str, object] = {}
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop and prop["default"] != {}:
            found[f"{prefix}.{name}"] = prop["default"]
        found.update(_crd_defaults(prop, f"{prefix}.{name}"))
    return found


def test_crd_defaults_are_the_parser_defaults() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = _crd_defaults(spec_schema)
    explicit: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for path, value in defaults.items():
        set_path(explicit, path.removeprefix("spec."), value)
    assert specs.parse_spec(explicit) == specs.parse_spec(MINIMAL)
    assert len(defaults) >= 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("1h30m", 5400.0), ("0s", 0.0), ("250ms", 0.25), ("2h", 7200.0)],
    ids=["minutes", "hours-and-minutes", "zero", "milliseconds", "hours"],
)
def test_parse_duration_reads_go_style_durations(text: str, seconds: float) -> None:
    assert specs.parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["ten", "30", "1.5h", "-1m", "", "m30"], ids=repr)
def test_parse_duration_refuses_what_is_not_one(text: str) -> None:
    assert specs.parse_duration_s(text) is None


ERRORS = [
    ("drainTimeout", "ten", 'spec.drainTimeout: "ten" is not a duration like 30m'),
    ("drainTimeout", "25h", 'spec.drainTimeout: "25h" is longer than 86400s'),
    ("entrypoint", "agent.py", 'spec.entrypoint: "agent.py" is not a module:function'),
    ("workerType", "JT_ROOM", 'spec.workerType: "JT_ROOM" is not one of ROOM, PUBLISHER'),
    ("loadThreshold", 1.5, "spec.loadThreshold: 1.5 is not a number in [0, 1]"),
    ("loadThreshold", True, "spec.loadThreshold: true is not a number"),
    ("replicas", -1, "spec.replicas: -1 is not an integer in [0, 1000]"),
    ("numIdleProcesses", "3", 'spec.numIdleProcesses: "3" is not an integer'),
    ("livekit.url", "http://x", 'spec.livekit.url: "http://x" is not a ws:// or wss:// URL'),
    # found by the e2e bad-input test: the LiveKit client raised on it inside the dispatch guard
    ("livekit.url", "ws://[::1", 'spec.livekit.url: "ws://[::1" is not a ws:// or wss:// URL ('),
    ("livekit.url", "ws://lk:99999", 'spec.livekit.url: "ws://lk:99999" is not a ws:// or wss://'),
    ("livekit.url", "ws://:7880", 'spec.livekit.url: "ws://:7880" is not a ws:// or wss:// URL'),
    ("livekit.credentialsSecret", None, "spec.livekit.credentialsSecret.name: null is not set"),
    ("logLevel", "VERBOSE", 'spec.logLevel: "VERBOSE" is not one of DEBUG'),
    ("jobMemory", {"warnMB": 900, "limitMB": 800}, "spec.jobMemory.limitMB: 800 is below warnMB"),
    ("autoscaling.minReplicas", 11, "spec.autoscaling.minReplicas: 11 is above maxReplicas (10)"),
    ("autoscaling.targetLoad", 0.9, "spec.autoscaling.targetLoad: 0.9 is above loadThreshold"),
    ("autoscaling.scaleDown.stepPods", 0, "spec.autoscaling.scaleDown.stepPods: 0 is not an"),
    ("autoscaling.paused", "true", 'spec.autoscaling.paused: "true" is not true or false'),
    ("env", [{"name": "AGENT_NAME", "value": "x"}], 'spec.env[0].name: "AGENT_NAME" is set by'),
    ("env", [{"name": "A"}, {"name": "A"}], 'spec.env[1].name: "A" is listed twice'),
    ("env", "A=1", 'spec.env: "A=1" is not a list'),
    ("podTemplate.labels", {"a": 1}, 'spec.podTemplate.labels: {"a": 1} is not a map of strings'),
    ("podTemplate.imagePullSecrets", [{}], "spec.podTemplate.imagePullSecrets[0].name: null"),
    ("imagePullPolicy", "Sometimes", 'spec.imagePullPolicy: "Sometimes" is not Always'),
    ("image", "", 'spec.image: "" is not an image reference'),
    ("permissions.hidden", "yes", 'spec.permissions.hidden: "yes" is not true or false'),
    ("recovery.silenceTimeout", "5s", 'spec.recovery.silenceTimeout: "5s" is shorter than 10s'),
    ("recovery.silenceTimeout", "2h", 'spec.recovery.silenceTimeout: "2h" is'),
    (
        "autoscaling.headroom.missRate",
        0,
        "spec.autoscaling.headroom.missRate: 0 is not a fraction of calls in [1e-09, 0.5] "
        "(0.001: at most 0.1 % of calls find no worker)",
    ),
    ("autoscaling.headroom.missRate", 1, "spec.autoscaling.headroom.missRate: 1 is not a fraction"),
    ("autoscaling.headroom.missRate", "0.1%", 'spec.autoscaling.headroom.missRate: "0.1%" is not'),
    ("autoscaling.headroom.missRate", True, "spec.autoscaling.headroom.missRate: true is not"),
    ("autoscaling.headroom", 0.001, "spec.autoscaling.headroom: 0.001 is not an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_invalid_field_error_names_field_value_and_fix(
    path: str, value: object, message: str
) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(with_(path, value))
    assert str(caught.value).startswith(message)


def test_spec_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(specs.InvalidSpecError, match=r"^spec: \[1\] is not an object"):
        specs.parse_spec([1])


def test_missing_required_field_is_named() -> None:
    with pytest.raises(specs.InvalidSpecError, match=r"^spec\.image: null is not set"):
        specs.parse_spec({k: v for k, v in MINIMAL.items() if k != "image"})


def test_neither_entrypoint_nor_command_is_refused() -> None:
    with pytest.raises(specs.InvalidSpecError, match="set exactly one"):
        specs.parse_spec({k: v for k, v in MINIMAL.items() if k != "entrypoint"})


def test_both_entrypoint_and_command_are_refused() -> None:
    with pytest.raises(specs.InvalidSpecError, match=r'^spec: \["command", "entrypoint"\]'):
        specs.parse_spec({**MINIMAL, "command": ["python", "agent.py", "start"]})


def test_a_command_replaces_the_entrypoint() -> None:
    raw = {k: v for k, v in MINIMAL.items() if k != "entrypoint"}
    spec = specs.parse_spec({**raw, "command": ["python", "agent.py"], "args": ["start"]})
    assert (spec.entrypoint, spec.command, spec.args) == ("", ("python", "agent.py"), ("start",))


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        pytest.param({"args": ["start"]}, "spec.args", id="args-without-command"),
        pytest.param({"volumeMounts": [{"name": "models"}]}, "spec.volumeMounts[0].mountPath",
                     id="mount-without-path"),
        pytest.param({"envFrom": ["x"]}, "spec.envFrom[0]", id="envfrom-not-object"),
        pytest.param({"podTemplate": {"volumes": [{"name": "tmp", "emptyDir": {}}]}},
                     "spec.podTemplate.volumes[0].name", id="tmp-volume"),
    ],
)  # fmt: skip
def test_pod_additions_are_checked(raw: dict[str, object], path: str) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec({**MINIMAL, **raw})
    assert caught.value.path == path


def test_long_values_are_shortened_in_errors() -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(with_("drainTimeout", "x" * 500))
    assert len(str(caught.value)) < 140


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "image",
        "entrypoint",
        "livekit",
        "drainTimeout",
        "env",
        "podTemplate",
        "autoscaling",
        "jobMemory",
        "permissions",
        "replicas",
        "loadThreshold",
        "workerType",
        "resources",
    ]
)


@pytest.mark.timeout(10)  # a property test: many examples, on a shared machine
@settings(max_examples=150, deadline=None)
@given(st.dictionaries(FIELDS, JSONS, max_size=6) | JSONS)
def test_parse_spec_never_crashes_on_arbitrary_input(raw: object) -> None:
    candidate = {**MINIMAL, **raw} if isinstance(raw, dict) else raw
    try:
        specs.parse_spec(candidate)
    except specs.InvalidSpecError as error:
        message = str(error)
    else:
        message = "spec: parsed"
    assert message.startswith("spec")


def _typed_leaves(schema: dict[str, Any], prefix: str) -> list[str]:
    leaves = []
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        if prop.get("type") in {"string", "integer", "number", "boolean"}:
            leaves.append(path)
        elif prop.get("type") == "object" and "properties" in prop:
            leaves += _typed_leaves(prop, path)
    return leaves


def _crd_spec_leaves() -> list[str]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return _typed_leaves(spec_schema, "spec")


@pytest.mark.parametrize("path", _crd_spec_leaves())
def test_parser_reads_every_field_the_crd_declares(path: str) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(with_(path.removeprefix("spec."), [["not", "a", "scalar"]]))
    assert caught.value.path == path


def test_recovery_waits_a_minute_of_silence_by_default() -> None:
    assert specs.parse_spec(MINIMAL).recovery.silence_timeout_s == 60.0
    raw = with_("recovery", {"redispatch": True, "silenceTimeout": "2m"})
    assert specs.parse_spec(raw).recovery == specs.Recovery(
        redispatch=True, silence_timeout_s=120.0
    )


def test_autoscaling_is_not_paused_unless_the_spec_says_so() -> None:
    assert specs.parse_spec(MINIMAL).autoscaling.paused is False
    raw = with_("autoscaling", {"enabled": True, "paused": True})
    assert specs.parse_spec(raw).autoscaling.paused is True


def test_warm_headroom_has_no_miss_rate_target_by_default() -> None:
    assert specs.parse_spec(MINIMAL).autoscaling.headroom == specs.Headroom(miss_rate=None)


@pytest.mark.parametrize("rate", [0.001, 1e-9, 0.5, 0.05], ids=repr)
def test_a_miss_rate_target_is_read_as_a_fraction_of_calls(rate: float) -> None:
    parsed = specs.parse_spec(with_("autoscaling", {"headroom": {"missRate": rate}}))
    assert parsed.autoscaling.headroom == specs.Headroom(miss_rate=rate)
    assert parsed.autoscaling.min_available_workers == 1  # still the floor
