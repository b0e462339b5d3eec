"""parse_spec: defaults applied once (and equal to the CRD's), errors that name field and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import given, settings

from agentworker_operator import podtemplate as podtemplates
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
    assert parsed.ports == ()
    assert parsed.pod_template == specs.PodTemplate()
    assert parsed.rollout == specs.Rollout(max_surge="25%")
    assert parsed.disruption_budget == specs.DisruptionBudget(
        enabled=True, max_unavailable=1, min_available=None
    )


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


SPREAD = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
SIDECAR = {"name": "proxy", "image": "ghcr.io/acme/proxy:1", "restartPolicy": "Always"}
POD_TEMPLATE_ERRORS: list[tuple[str, object, str]] = [
    ("initContainers", [{**SIDECAR, "name": "agent-worker"}],
     'spec.podTemplate.initContainers[0].name: "agent-worker" is the name of the worker container'),
    ("initContainers", [{**SIDECAR, "name": "agentworker-companion"}],
     'spec.podTemplate.initContainers[0].name: "agentworker-companion" is the name of the '
     "companion's init container"),
    ("initContainers", [SIDECAR, SIDECAR],
     'spec.podTemplate.initContainers[1].name: "proxy" is listed twice'),
    ("initContainers", [{**SIDECAR, "restartPolicy": "OnFailure"}],
     'spec.podTemplate.initContainers[0].restartPolicy: "OnFailure" is not Always'),
    ("initContainers", [{"name": "proxy"}], "spec.podTemplate.initContainers[0].image: null is"),
    ("initContainers", [{**SIDECAR, "name": "Proxy"}],
     'spec.podTemplate.initContainers[0].name: "Proxy" is not a container name'),
    ("initContainers", [{**SIDECAR, "securityContext": "root"}],
     'spec.podTemplate.initContainers[0].securityContext: "root" is not an object'),
    ("initContainers", ["proxy"], 'spec.podTemplate.initContainers[0]: "proxy" is not an object'),
    ("topologySpreadConstraints", [{**SPREAD, "maxSkew": 0}],
     "spec.podTemplate.topologySpreadConstraints[0].maxSkew: 0 is not an integer in [1, 1000]"),
    ("topologySpreadConstraints", [{**SPREAD, "topologyKey": None}],
     "spec.podTemplate.topologySpreadConstraints[0].topologyKey: null is required"),
    ("topologySpreadConstraints", [{**SPREAD, "whenUnsatisfiable": "Never"}],
     'spec.podTemplate.topologySpreadConstraints[0].whenUnsatisfiable: "Never" is not '
     "DoNotSchedule or ScheduleAnyway"),
    ("topologySpreadConstraints", [{**SPREAD, "labelSelector": "app=x"}],
     'spec.podTemplate.topologySpreadConstraints[0].labelSelector: "app=x" is not an object'),
    ("topologySpreadConstraints", [SPREAD, {**SPREAD, "maxSkew": 2}],
     'spec.podTemplate.topologySpreadConstraints[1].topologyKey: "zone" is listed twice with '
     "whenUnsatisfiable DoNotSchedule"),
    ("runtimeClassName", "gVisor", 'spec.podTemplate.runtimeClassName: "gVisor" is not a'),
    ("dnsPolicy", "Cluster", 'spec.podTemplate.dnsPolicy: "Cluster" is not one of ClusterFirst'),
    ("dnsConfig", {"nameservers": ["dns.google"]},
     'spec.podTemplate.dnsConfig.nameservers[0]: "dns.google" is not an IP address'),
    ("dnsConfig", {"nameservers": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]},
     'spec.podTemplate.dnsConfig.nameservers: ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] '
     "has more than 3 entries"),
    ("dnsConfig", {"searches": [""]}, 'spec.podTemplate.dnsConfig.searches[0]: "" is not a'),
    ("dnsConfig", {"options": [{"value": "1"}]},
     "spec.podTemplate.dnsConfig.options[0].name: null is required"),
    ("dnsConfig", ["8.8.8.8"], 'spec.podTemplate.dnsConfig: ["8.8.8.8"] is not an object'),
]  # fmt: skip

PODS_4 = {"type": "Pods", "value": 4, "periodSeconds": 15}
SCALING_ERRORS: list[tuple[str, object, str]] = [
    ("scaleUp", {"stepPods": 4, "policies": [PODS_4]},
     "spec.autoscaling.scaleUp.stepPods: 4 is the shorthand for one Pods policy and cannot stand "
     "beside policies; set one (an AgentWorker created before policies existed holds stepPods "
     "and period from the CRD's former defaults: remove both)"),
    ("scaleDown", {"period": "60s", "policies": [PODS_4]},
     'spec.autoscaling.scaleDown.period: "60s" is the shorthand for one Pods policy'),
    ("scaleUp.policies", [], "spec.autoscaling.scaleUp.policies: [] is not a list of 1 to 10 "
     "policies (selectPolicy Disabled stops this direction)"),
    ("scaleUp.policies", [PODS_4] * 11, "spec.autoscaling.scaleUp.policies: [{"),
    ("scaleUp.policies", "Pods", 'spec.autoscaling.scaleUp.policies: "Pods" is not a list'),
    ("scaleUp.policies", ["Pods"], 'spec.autoscaling.scaleUp.policies[0]: "Pods" is not an object'),
    ("scaleUp.policies", [{"type": "Pods", "value": 4}],
     "spec.autoscaling.scaleUp.policies[0].periodSeconds: null is not set but is required"),
    ("scaleUp.policies", [PODS_4, {"value": 4, "periodSeconds": 15}],
     "spec.autoscaling.scaleUp.policies[1].type: null is not set but is required"),
    ("scaleUp.policies", [{**PODS_4, "type": "Replicas"}],
     'spec.autoscaling.scaleUp.policies[0].type: "Replicas" is not one of Pods, Percent'),
    ("scaleUp.policies", [{**PODS_4, "value": 0}],
     "spec.autoscaling.scaleUp.policies[0].value: 0 is not an integer in [1, 1000]"),
    ("scaleUp.policies", [{**PODS_4, "periodSeconds": 3600}],
     "spec.autoscaling.scaleUp.policies[0].periodSeconds: 3600 is not an integer in [1, 1800]"),
    ("scaleUp.policies", [{**PODS_4, "periodSeconds": "15s"}],
     'spec.autoscaling.scaleUp.policies[0].periodSeconds: "15s" is not an integer'),
    ("scaleDown.policies", [{"type": "Percent", "value": 150, "periodSeconds": 60}],
     "spec.autoscaling.scaleDown.policies[0].value: 150 is not an integer in [1, 100]"),
    ("scaleUp.selectPolicy", "Largest",
     'spec.autoscaling.scaleUp.selectPolicy: "Largest" is not one of Max, Min, Disabled'),
    ("headroom", {"workers": 1, "percent": 20},
     'spec.autoscaling.headroom: {"percent": 20, "workers": 1} sets more than one of workers, '
     "slots and percent; set one"),
    ("headroom.percent", 100,
     "spec.autoscaling.headroom.percent: 100 is not an integer in [0, 99]"),
    ("headroom.slots", -1, "spec.autoscaling.headroom.slots: -1 is not an integer in [0, 10000]"),
    ("headroom.workers", 1.5, "spec.autoscaling.headroom.workers: 1.5 is not an integer"),
]  # fmt: skip

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
    *[(f"autoscaling.{key}", value, message) for key, value, message in SCALING_ERRORS],
    *[(f"podTemplate.{key}", value, message) for key, value, message in POD_TEMPLATE_ERRORS],
    ("ports", [{"containerPort": 8081}], "spec.ports[0].containerPort: 8081 is the worker's own"),
    ("ports", [{"containerPort": 9000, "name": "http"}],
     'spec.ports[0].name: "http" is the name of the worker\'s own port (8081)'),
    ("ports", [{"containerPort": 9000, "name": "Debug_Port"}],
     'spec.ports[0].name: "Debug_Port" is not a port name'),
    ("ports", [{"containerPort": 9000, "name": "9000"}], 'spec.ports[0].name: "9000" is not a'),
    ("ports", [{"containerPort": 9000, "name": "a"}, {"containerPort": 9001, "name": "a"}],
     'spec.ports[1].name: "a" is listed twice'),
    ("ports", [{"containerPort": 9000}, {"containerPort": 9000, "protocol": "TCP"}],
     "spec.ports[1].containerPort: 9000 is listed twice for TCP"),
    ("ports", [{"containerPort": 70000}], "spec.ports[0].containerPort: 70000 is not an integer"),
    ("ports", [{"name": "debug"}], "spec.ports[0].containerPort: null is required"),
    ("ports", [{"containerPort": 9000, "protocol": "QUIC"}],
     'spec.ports[0].protocol: "QUIC" is not one of TCP, UDP, SCTP'),
    ("rollout.maxSurge", 0,
     "spec.rollout.maxSurge: 0 is not a number in [1, 1000] nor a percentage in [1%, 100%]"),
    ("rollout.maxSurge", "0%", 'spec.rollout.maxSurge: "0%" is not a number in [1, 1000]'),
    ("rollout.maxSurge", "150%", 'spec.rollout.maxSurge: "150%" is not a number'),
    ("rollout.maxSurge", "2", 'spec.rollout.maxSurge: "2" is not a number'),
    ("rollout.maxSurge", True, "spec.rollout.maxSurge: true is not a number"),
    ("rollout.maxUnavailable", 1, "spec.rollout.maxUnavailable: 1 is always 0: no old worker"),
    ("disruptionBudget", {"maxUnavailable": 1, "minAvailable": 2},
     'spec.disruptionBudget: {"maxUnavailable": 1, "minAvailable": 2} sets both maxUnavailable '
     "and minAvailable; set one"),
    ("disruptionBudget.maxUnavailable", -1,
     "spec.disruptionBudget.maxUnavailable: -1 is not a number in [0, 1000] nor a percentage"),
    ("disruptionBudget.minAvailable", "half", 'spec.disruptionBudget.minAvailable: "half" is not'),
    ("disruptionBudget.enabled", "no", 'spec.disruptionBudget.enabled: "no" is not true or false'),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_invalid_field_error_names_field_value_and_fix(
    path: str, value: object, message: str
) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(with_(path, value))
    assert str(caught.value).startswith(message)


def test_dns_policy_none_without_a_nameserver_is_refused() -> None:
    raw = with_("podTemplate", {"dnsPolicy": "None", "dnsConfig": {"searches": ["svc.local"]}})
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(raw)
    assert str(caught.value) == (
        "spec.podTemplate.dnsConfig.nameservers: [] is empty while dnsPolicy is None: the pods "
        "would have no DNS server"
    )


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
        "ports",
        "rollout",
        "disruptionBudget",
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
    # one worker below its threshold stays the floor
    assert parsed.autoscaling.headroom == specs.Headroom(
        unit=specs.HeadroomUnit.WORKERS, amount=1, miss_rate=rate
    )


def test_extra_ports_are_parsed_tcp_unless_said() -> None:
    raw = with_(
        "ports",
        [{"containerPort": 9090, "name": "debug"}, {"containerPort": 5353, "protocol": "UDP"}],
    )
    assert specs.parse_spec(raw).ports == (
        specs.ContainerPort(container_port=9090, name="debug", protocol=podtemplates.Protocol.TCP),
        specs.ContainerPort(container_port=5353, name="", protocol=podtemplates.Protocol.UDP),
    )  # fmt: skip


def test_the_same_port_number_may_serve_two_protocols() -> None:
    raw = with_("ports", [{"containerPort": 5353}, {"containerPort": 5353, "protocol": "UDP"}])
    assert [p.protocol for p in specs.parse_spec(raw).ports] == ["TCP", "UDP"]


def test_pod_template_additions_are_parsed() -> None:
    template = {
        "topologySpreadConstraints": [SPREAD],
        "initContainers": [{"name": "migrate", "image": "ghcr.io/acme/migrate:1"}, SIDECAR],
        "runtimeClassName": "gvisor",
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["10.0.0.10"], "options": [{"name": "ndots", "value": "1"}]},
    }
    parsed = specs.parse_spec(with_("podTemplate", template)).pod_template
    assert parsed.topology_spread_constraints == (SPREAD,)
    assert [c["name"] for c in parsed.init_containers] == ["migrate", "proxy"]
    assert parsed.runtime_class_name == "gvisor"
    assert parsed.dns_policy is podtemplates.DnsPolicy.NONE
    assert parsed.dns_config == template["dnsConfig"]


def test_pod_template_additions_are_absent_unless_given() -> None:
    parsed = specs.parse_spec(MINIMAL).pod_template
    assert (parsed.topology_spread_constraints, parsed.init_containers) == ((), ())
    assert (parsed.runtime_class_name, parsed.dns_policy, parsed.dns_config) == (None, None, None)


@pytest.mark.parametrize("surge", [1, 3, "1%", "50%", "100%"], ids=repr)
def test_a_rollout_surge_is_a_number_or_a_percentage(surge: int | str) -> None:
    assert specs.parse_spec(with_("rollout.maxSurge", surge)).rollout.max_surge == surge


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        pytest.param({}, specs.DisruptionBudget(max_unavailable=1), id="one-at-a-time"),
        pytest.param({"maxUnavailable": "25%"}, specs.DisruptionBudget(max_unavailable="25%"),
                     id="max-unavailable-percent"),
        pytest.param({"maxUnavailable": 0}, specs.DisruptionBudget(max_unavailable=0),
                     id="max-unavailable-zero"),
        pytest.param({"minAvailable": 2},
                     specs.DisruptionBudget(max_unavailable=None, min_available=2),
                     id="min-available-instead"),
        pytest.param({"minAvailable": "80%"},
                     specs.DisruptionBudget(max_unavailable=None, min_available="80%"),
                     id="min-available-percent"),
        pytest.param({"enabled": False}, specs.DisruptionBudget(enabled=False), id="disabled"),
    ],
)  # fmt: skip
def test_the_disruption_budget_is_parsed(
    budget: dict[str, object], expected: specs.DisruptionBudget
) -> None:
    assert specs.parse_spec(with_("disruptionBudget", budget)).disruption_budget == expected


# -- scaling policies and warm headroom ----------------------------------------------------------


def autoscaling(raw: dict[str, Any]) -> specs.Autoscaling:
    return specs.parse_spec(with_("autoscaling", raw)).autoscaling


def pods(value: int, period_s: float) -> specs.ScalingPolicy:
    return specs.ScalingPolicy(type=specs.PolicyType.PODS, value=value, period_s=period_s)


def percent(value: int, period_s: float) -> specs.ScalingPolicy:
    return specs.ScalingPolicy(type=specs.PolicyType.PERCENT, value=value, period_s=period_s)


def test_scale_up_defaults_to_the_hpas_four_workers_or_doubling_per_15_s() -> None:
    up = specs.parse_spec(MINIMAL).autoscaling.scale_up
    assert up.policies == (pods(4, 15.0), percent(100, 15.0))
    assert (up.select_policy, up.stabilization_window_s) == (specs.SelectPolicy.MAX, 0.0)


def test_scale_down_keeps_one_worker_per_minute_by_default() -> None:
    down = specs.parse_spec(MINIMAL).autoscaling.scale_down
    assert down.policies == (pods(1, 60.0),)
    assert (down.select_policy, down.stabilization_window_s) == (specs.SelectPolicy.MAX, 300.0)


@pytest.mark.parametrize(
    ("direction", "raw", "policy"),
    [
        pytest.param("scaleUp", {"stepPods": 2}, pods(2, 15.0), id="up-step-only"),
        pytest.param("scaleUp", {"period": "1m"}, pods(4, 60.0), id="up-period-only"),
        pytest.param("scaleUp", {"stepPods": 4, "period": "15s"}, pods(4, 15.0), id="up-both"),
        pytest.param("scaleDown", {"stepPods": 3}, pods(3, 60.0), id="down-step-only"),
        pytest.param("scaleDown", {"period": "250ms"}, pods(1, 0.25), id="down-period-only"),
    ],
)
def test_step_pods_per_period_is_the_shorthand_for_one_pods_policy(
    direction: str, raw: dict[str, Any], policy: specs.ScalingPolicy
) -> None:
    parsed = autoscaling({direction: raw})
    behavior = parsed.scale_up if direction == "scaleUp" else parsed.scale_down
    assert behavior.policies == (policy,)


def test_an_agentworker_stored_with_the_former_crd_defaults_scales_as_before() -> None:
    # the CRD used to default stepPods, period and minAvailableWorkers: the API server wrote
    # them into every object it stored
    stored = {
        "minAvailableWorkers": 1,
        "scaleUp": {"stabilizationWindow": "0s", "stepPods": 4, "period": "15s"},
        "scaleDown": {"stabilizationWindow": "5m", "stepPods": 1, "period": "60s"},
    }
    parsed = autoscaling(stored)
    assert parsed.scale_up.policies == (pods(4, 15.0),)  # not the new default's doubling
    assert parsed.scale_down == specs.DEFAULT_SCALE_DOWN
    assert parsed.headroom == specs.Headroom()


def test_policies_and_select_policy_are_read_as_the_hpa_writes_them() -> None:
    parsed = autoscaling(
        {
            "scaleUp": {
                "policies": [
                    {"type": "Percent", "value": 50, "periodSeconds": 30},
                    {"type": "Pods", "value": 2, "periodSeconds": 60},
                ],
                "selectPolicy": "Min",
            },
            "scaleDown": {"selectPolicy": "Disabled", "busyWorkers": "Drain"},
        }
    )
    assert parsed.scale_up.policies == (percent(50, 30.0), pods(2, 60.0))
    assert parsed.scale_up.select_policy is specs.SelectPolicy.MIN
    assert parsed.scale_down.policies == specs.DEFAULT_SCALE_DOWN.policies
    assert parsed.scale_down.select_policy is specs.SelectPolicy.DISABLED


def test_a_scale_down_percent_policy_may_remove_every_worker() -> None:
    raw = {"scaleDown": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    assert autoscaling(raw).scale_down.policies == (percent(100, 15.0),)


def test_warm_headroom_is_one_worker_by_default() -> None:
    assert specs.parse_spec(MINIMAL).autoscaling.headroom == specs.Headroom(
        unit=specs.HeadroomUnit.WORKERS, amount=1, miss_rate=None
    )


@pytest.mark.parametrize(
    ("raw", "unit", "amount"),
    [
        pytest.param({"minAvailableWorkers": 3}, "workers", 3, id="old-spelling"),
        pytest.param({"headroom": {"workers": 3}}, "workers", 3, id="workers"),
        pytest.param({"headroom": {"workers": 0}}, "workers", 0, id="no-headroom"),
        pytest.param({"headroom": {"slots": 8}}, "slots", 8, id="slots"),
        pytest.param({"headroom": {"percent": 20}}, "percent", 20, id="percent"),
        pytest.param({"headroom": {"percent": 99, "missRate": 0.01}}, "percent", 99, id="rate"),
    ],
)
def test_warm_headroom_is_a_count_of_workers_slots_or_a_percentage(
    raw: dict[str, Any], unit: str, amount: int
) -> None:
    room = autoscaling(raw).headroom
    assert (room.unit, room.amount) == (specs.HeadroomUnit(unit), amount)


@pytest.mark.parametrize("unit", ["workers", "slots", "percent"])
def test_min_available_workers_beside_a_headroom_amount_is_refused(unit: str) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        autoscaling({"minAvailableWorkers": 1, "headroom": {unit: 2}})
    assert caught.value.path == "spec.autoscaling.minAvailableWorkers"
    assert str(caught.value).startswith(
        "spec.autoscaling.minAvailableWorkers: 1 is the old spelling of headroom.workers and "
        f"cannot stand beside headroom.{unit}; set one"
    )
