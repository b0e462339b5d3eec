"""The companion in the pod template: what each plan builds (spec.companion.mode Inject,
Installed or Disabled, a fallback found on the image, this runtime), and the mode as the spec
and the CRD take it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from agentworker_operator import builders, kube
from agentworker_operator import companion as companions
from agentworker_operator import spec as specs
from agentworker_operator import sync as syncs
from agentworker_operator.companion import Mode, Plan
from agentworker_operator.settings import SyncSettings
from agentworker_operator.store import Key, Store
from tests.unit.operator.test_builders import OFFICIAL, OWNER
from tests.unit.operator.test_spec import MINIMAL

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

COMPANION_IMAGE = "ghcr.io/agentworker/agent-operator:9.9.9"
IMAGE = str(OFFICIAL["image"])
CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "agentworker.dev_agentworkers.yaml"


def official(**changes: Any) -> dict[str, Any]:
    return {**OFFICIAL, **changes}


def template(
    raw: dict[str, Any] | None = None,
    *,
    fallback: companions.Fallback | None = None,
    image: str = COMPANION_IMAGE,
) -> dict[str, Any]:
    """The pod template of a spec (a command fleet unless said), as the operator builds it."""
    spec = specs.parse_spec(raw or OFFICIAL)
    injection = builders.injection_for(spec, image=image, fallback=fallback)
    built: dict[str, Any] = builders.build_deployment(OWNER, spec, replicas=1, injection=injection)[
        "spec"
    ]["template"]
    return built


def worker_container(built: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = built["spec"]["containers"][0]
    return first


def env(built: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in worker_container(built)["env"]}


FALLBACK = companions.Fallback(
    image=IMAGE, mode=Mode.INJECT, reason="NotLoaded", message="not loaded"
)
INSTALLED = official(companion={"mode": "Installed"})

PLANS = {
    "inject": (OFFICIAL, None),
    "installed": (INSTALLED, None),
    "off": (official(companion={"mode": "Disabled"}), None),
    "fallback": (OFFICIAL, FALLBACK),
    "runtime": (MINIMAL, None),
}


# -- the spec and the CRD ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("companion", "mode"),
    [
        (None, Mode.INJECT),
        ({}, Mode.INJECT),
        ({"mode": "Inject"}, Mode.INJECT),
        ({"mode": "Installed"}, Mode.INSTALLED),
        ({"mode": "Disabled"}, Mode.DISABLED),
    ],
    ids=["unset", "empty", "inject", "installed", "off"],
)
def test_the_mode_defaults_to_inject(companion: dict[str, str] | None, mode: Mode) -> None:
    raw = official() if companion is None else official(companion=companion)
    assert specs.parse_spec(raw).companion_mode is mode


@pytest.mark.parametrize(
    ("companion", "message"),
    [
        (
            {"mode": "disabled"},
            'spec.companion.mode: "disabled" is not one of Inject, Installed, Disabled',
        ),
        (
            {"mode": "Sidecar"},
            'spec.companion.mode: "Sidecar" is not one of Inject, Installed, Disabled',
        ),
        ({"mode": 1}, "spec.companion.mode: 1 is not one of Inject, Installed, Disabled"),
        ("Disabled", 'spec.companion: "Disabled" is not an object'),
    ],
    ids=["lowercase", "not-a-mode", "a-number", "not-an-object"],
)
def test_a_bad_mode_names_the_field_the_value_and_the_choices(
    companion: object, message: str
) -> None:
    with pytest.raises(specs.InvalidSpecError) as caught:
        specs.parse_spec(official(companion=companion))
    assert str(caught.value) == message


def test_the_crd_offers_the_modes_the_operator_knows() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    mode = spec["properties"]["companion"]["properties"]["mode"]
    assert mode["enum"] == [m.value for m in Mode]
    assert mode["default"] == Mode.INJECT.value


def test_the_crd_keeps_every_field_of_the_companion_record() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    record = companions.status_record(Plan.FALLBACK, FALLBACK, Mode.INJECT)
    assert record is not None
    fields = schema["properties"]["companion"]["properties"]
    assert {name: fields[name]["type"] for name in record} == dict.fromkeys(record, "string")


# -- which plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fallback", "plan"),
    [
        (OFFICIAL, None, Plan.INJECT),
        (official(companion={"mode": "Disabled"}), None, Plan.OFF),
        (OFFICIAL, FALLBACK, Plan.FALLBACK),
        (official(image="ghcr.io/acme/agent:2"), FALLBACK, Plan.INJECT),
        (INSTALLED, None, Plan.INSTALLED),
        (INSTALLED, FALLBACK, Plan.INSTALLED),
        (MINIMAL, None, Plan.RUNTIME),
        ({**MINIMAL, "companion": {"mode": "Disabled"}}, FALLBACK, Plan.RUNTIME),
    ],
    ids=[
        "inject",
        "off",
        "fallback",
        "new-image",
        "installed",
        "installed-after-inject-fell-back",
        "runtime",
        "runtime-ignores-the-mode",
    ],
)
def test_injection_for_a_spec(
    raw: dict[str, Any], fallback: companions.Fallback | None, plan: Plan
) -> None:
    spec = specs.parse_spec(raw)
    injection = builders.injection_for(spec, image=COMPANION_IMAGE, fallback=fallback)
    assert injection == builders.Injection(plan=plan, image=COMPANION_IMAGE)


async def never_reconciled(key: Key, trigger: str, full: bool) -> None:
    raise AssertionError("not reconciled here")


def test_a_fallback_found_with_another_image_or_mode_is_forgotten() -> None:
    key = (OWNER.namespace, OWNER.name)
    syncer = syncs.Syncer(
        client=cast(kube.Kube, None),
        store=Store(),
        config=SyncSettings(),
        reconcile=never_reconciled,
        locks={},
        control_key=b"key",
    )
    syncer.fleets[key] = syncs.Fleet(fallback=FALLBACK)  # found in mode Inject on IMAGE
    body: dict[str, Any] = {"metadata": {"namespace": key[0], "name": key[1]}, "status": {}}
    inject, installed = specs.parse_spec(OFFICIAL), specs.parse_spec(INSTALLED)
    assert syncer.injection(key, body, inject).plan is Plan.FALLBACK
    assert syncer.injection(key, body, inject).plan is Plan.FALLBACK  # kept while it counts
    assert syncer.injection(key, body, installed).plan is Plan.INSTALLED
    assert syncer.injection(key, body, inject).plan is Plan.INJECT  # back to Inject: tried again


def test_the_companion_image_defaults_to_the_operators() -> None:
    injection = builders.injection_for(specs.parse_spec(OFFICIAL))
    assert injection.image == builders.DEFAULT_COMPANION_IMAGE


def test_without_an_injection_a_command_fleet_is_built_for_inject() -> None:
    spec = specs.parse_spec(OFFICIAL)
    assert builders.build_pod_template(OWNER, spec) == builders.build_pod_template(
        OWNER, spec, injection=builders.Injection(plan=Plan.INJECT)
    )


# -- Plan.INJECT ----------------------------------------------------------------------------------


def test_inject_copies_the_companion_in_an_init_container() -> None:
    assert template()["spec"]["initContainers"] == [
        {
            "name": "agentworker-companion",
            "image": COMPANION_IMAGE,
            "command": [
                "python",
                "-m",
                "agentworker_companion",
                "install",
                "/agentworker-companion",
            ],
            "securityContext": builders.RESTRICTED_CONTAINER_SECURITY,
            "resources": builders.COMPANION_RESOURCES,
            "volumeMounts": [
                {"name": "agentworker-companion", "mountPath": "/agentworker-companion"}
            ],
        }
    ]


def test_the_companions_copy_runs_before_the_users_init_containers_and_sidecars() -> None:
    # the worker starts only after every init container, so the copy is always done first; it
    # needs no network and none of the user's volumes, so it does not wait for their sidecars
    sidecar = {"name": "proxy", "image": "ghcr.io/acme/proxy:1", "restartPolicy": "Always"}
    migrate = {"name": "migrate", "image": "ghcr.io/acme/migrate:1"}
    built = template(official(podTemplate={"initContainers": [sidecar, migrate]}))
    names = [c["name"] for c in built["spec"]["initContainers"]]
    assert names == [companions.INIT_CONTAINER, "proxy", "migrate"]
    assert "restartPolicy" not in built["spec"]["initContainers"][0]


def test_without_injection_only_the_users_init_containers_run() -> None:
    sidecar = {"name": "proxy", "image": "ghcr.io/acme/proxy:1", "restartPolicy": "Always"}
    raw = official(podTemplate={"initContainers": [sidecar]}, companion={"mode": "Installed"})
    assert [c["name"] for c in template(raw)["spec"]["initContainers"]] == ["proxy"]


def test_the_init_container_does_not_share_the_operators_constants() -> None:
    init = template()["spec"]["initContainers"][0]
    init["resources"]["requests"]["cpu"] = "1"
    init["securityContext"]["runAsNonRoot"] = False
    assert builders.COMPANION_RESOURCES["requests"]["cpu"] == "10m"
    assert builders.RESTRICTED_CONTAINER_SECURITY["runAsNonRoot"] is True


def test_inject_adds_a_small_emptydir_the_autoscaler_may_evict() -> None:
    built = template()
    assert built["spec"]["volumes"][-1] == {
        "name": "agentworker-companion",
        "emptyDir": {"sizeLimit": "16Mi"},
    }
    annotations = built["metadata"]["annotations"]
    assert annotations[builders.SAFE_TO_EVICT_LOCAL_VOLUMES] == "tmp,agentworker-companion"


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("cache", "cache,tmp,agentworker-companion"),
        ("agentworker-companion, tmp", "agentworker-companion,tmp"),
    ],
    ids=["the-users-first", "listed-already"],
)
def test_the_companions_volume_joins_the_users_evictable_volumes(
    listed: str, expected: str
) -> None:
    raw = official(podTemplate={"annotations": {builders.SAFE_TO_EVICT_LOCAL_VOLUMES: listed}})
    annotations = template(raw)["metadata"]["annotations"]
    assert annotations[builders.SAFE_TO_EVICT_LOCAL_VOLUMES] == expected


def test_the_worker_mounts_the_copy_read_only() -> None:
    mounts = worker_container(template())["volumeMounts"]
    assert mounts[-1] == {
        "name": "agentworker-companion",
        "mountPath": "/agentworker-companion",
        "readOnly": True,
    }


def test_the_worker_is_told_to_load_it_from_the_copy() -> None:
    values = env(template())
    assert values["AGENTWORKER_COMPANION"] == "1"
    assert values["PYTHONPATH"] == "/agentworker-companion"


@pytest.mark.parametrize(
    ("theirs", "expected"),
    [("/app/lib", "/agentworker-companion:/app/lib"), ("", "/agentworker-companion")],
    ids=["a-path", "empty"],
)
def test_a_literal_pythonpath_of_the_user_comes_after_the_companion(
    theirs: str, expected: str
) -> None:
    raw = official(env=[{"name": "A", "value": "1"}, {"name": "PYTHONPATH", "value": theirs}])
    names = [v["name"] for v in worker_container(template(raw))["env"]]
    assert names.count("PYTHONPATH") == 1
    assert env(template(raw))["PYTHONPATH"] == expected
    assert names[-1] == "A"  # the rest of the user's env stays where it was


def test_a_pythonpath_from_value_from_is_left_alone() -> None:
    theirs = {"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "p"}}}
    variables = worker_container(template(official(env=[theirs])))["env"]
    assert [v for v in variables if v["name"] == "PYTHONPATH"] == [theirs]
    assert {"name": "AGENTWORKER_COMPANION", "value": "1"} in variables


def test_inject_probes_the_contract_and_labels_the_pod_for_the_podmonitor() -> None:
    built = template()
    container = worker_container(built)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert built["metadata"]["labels"][builders.METRICS_LABEL] == "true"


def test_the_command_still_runs_as_given_with_the_companion() -> None:
    container = worker_container(template())
    assert (container["command"], container["args"]) == (["python", "agent.py"], ["start"])


# -- Plan.INSTALLED -------------------------------------------------------------------------------


def test_installed_adds_no_init_container_volume_mount_or_pythonpath() -> None:
    built = template(INSTALLED)
    assert "initContainers" not in built["spec"]
    assert [v["name"] for v in built["spec"]["volumes"]] == ["tmp"]
    assert [m["name"] for m in worker_container(built)["volumeMounts"]] == ["tmp"]
    assert "PYTHONPATH" not in env(built)
    assert built["metadata"]["annotations"][builders.SAFE_TO_EVICT_LOCAL_VOLUMES] == "tmp"


def test_installed_turns_the_images_companion_on() -> None:
    assert env(template(INSTALLED))["AGENTWORKER_COMPANION"] == "1"


def test_installed_leaves_the_users_pythonpath_as_it_is() -> None:
    raw = official(companion={"mode": "Installed"}, env=[{"name": "PYTHONPATH", "value": "/app"}])
    assert env(template(raw))["PYTHONPATH"] == "/app"


def test_installed_probes_the_contract_and_labels_the_pod_for_the_podmonitor() -> None:
    built = template(INSTALLED)
    container = worker_container(built)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert built["metadata"]["labels"][builders.METRICS_LABEL] == "true"


def without_injection(built: dict[str, Any]) -> dict[str, Any]:
    """An injected template without what only injection adds (and the hash of the whole)."""
    pod = dict(built["spec"])
    del pod["initContainers"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != companions.VOLUME]
    container = dict(worker_container(built))
    container["env"] = [v for v in container["env"] if v["name"] != "PYTHONPATH"]
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["name"] != companions.VOLUME
    ]
    pod["containers"] = [container]
    annotations = dict(built["metadata"]["annotations"])
    annotations[builders.SAFE_TO_EVICT_LOCAL_VOLUMES] = "tmp"
    del annotations[builders.TEMPLATE_HASH_ANNOTATION]
    return {"metadata": {**built["metadata"], "annotations": annotations}, "spec": pod}


def test_installed_gives_the_pod_the_contract_exactly_as_inject_does() -> None:
    token = "t0ken"
    spec = specs.parse_spec(OFFICIAL)
    injected = builders.build_pod_template(
        OWNER, spec, control_token=token, injection=builders.Injection(plan=Plan.INJECT)
    )
    installed = builders.build_pod_template(
        OWNER, spec, control_token=token, injection=builders.Injection(plan=Plan.INSTALLED)
    )
    del installed["metadata"]["annotations"][builders.TEMPLATE_HASH_ANNOTATION]
    assert installed == without_injection(injected)
    # what both carry: the handshake's token, the companion's switch, the probes, the label
    assert {"AGENT_CONTROL_TOKEN", "AGENTWORKER_COMPANION"} <= set(env(installed))
    assert builders.CONTROL_TOKEN_HASH_ANNOTATION in installed["metadata"]["annotations"]


# -- Plan.OFF and Plan.FALLBACK -----------------------------------------------------------------


@pytest.mark.parametrize("plan", ["off", "fallback"])
def test_without_the_companion_the_pod_is_todays(plan: str) -> None:
    raw, fallback = PLANS[plan]
    built = template(raw, fallback=fallback)
    container = worker_container(built)
    assert "initContainers" not in built["spec"]
    assert [v["name"] for v in built["spec"]["volumes"]] == ["tmp"]
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]
    assert not {"AGENTWORKER_COMPANION", "PYTHONPATH"} & set(env(built))
    assert built["metadata"]["annotations"][builders.SAFE_TO_EVICT_LOCAL_VOLUMES] == "tmp"


@pytest.mark.parametrize("plan", ["off", "fallback"])
def test_without_the_companion_probes_are_at_slash_and_no_podmonitor_scrapes(plan: str) -> None:
    raw, fallback = PLANS[plan]
    built = template(raw, fallback=fallback)
    container = worker_container(built)
    assert container["readinessProbe"]["httpGet"]["path"] == "/"
    assert container["livenessProbe"]["httpGet"]["path"] == "/"
    assert built["metadata"]["labels"][builders.METRICS_LABEL] == "false"


def test_without_the_companion_the_users_pythonpath_is_theirs() -> None:
    raw = official(companion={"mode": "Disabled"}, env=[{"name": "PYTHONPATH", "value": "/app"}])
    assert env(template(raw))["PYTHONPATH"] == "/app"


# -- Plan.RUNTIME ------------------------------------------------------------------------------


def test_this_runtimes_pods_are_untouched_by_the_companion() -> None:
    built = template(MINIMAL)
    assert "initContainers" not in built["spec"]
    assert builders.METRICS_LABEL not in built["metadata"]["labels"]
    assert not {"AGENTWORKER_COMPANION", "PYTHONPATH"} & set(env(built))
    spec = specs.parse_spec(MINIMAL)
    assert built == builders.build_pod_template(OWNER, spec)


# -- every plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_every_env_name_volume_and_mount_is_there_once(plan: str) -> None:
    raw, fallback = PLANS[plan]
    raw = {**raw, "env": [{"name": "PYTHONPATH", "value": "/app"}]}
    built = template(raw, fallback=fallback)
    for names in (
        [v["name"] for v in worker_container(built)["env"]],
        [v["name"] for v in built["spec"]["volumes"]],
        [m["mountPath"] for m in worker_container(built)["volumeMounts"]],
    ):
        assert len(names) == len(set(names)), names


@pytest.mark.parametrize(
    "raw",
    [
        official(env=[{"name": "AGENTWORKER_COMPANION", "value": "0"}]),
        official(podTemplate={"volumes": [{"name": "agentworker-companion", "emptyDir": {}}]}),
    ],
    ids=["env", "volume"],
)
def test_the_companions_names_are_refused_in_the_spec_or_listed_once(raw: dict[str, Any]) -> None:
    try:
        built = template(raw)
    except specs.InvalidSpecError:
        return
    env_names = [v["name"] for v in worker_container(built)["env"]]
    volume_names = [v["name"] for v in built["spec"]["volumes"]]
    assert len(env_names) == len(set(env_names))
    assert len(volume_names) == len(set(volume_names))


def test_a_fallback_and_a_new_companion_image_each_roll_the_pods() -> None:
    spec = specs.parse_spec(OFFICIAL)

    def version(plan: Plan, image: str = COMPANION_IMAGE) -> str:
        injection = builders.Injection(plan=plan, image=image)
        return builders.template_hash(OWNER, spec, injection=injection)

    assert version(Plan.INJECT) == version(Plan.INJECT)
    assert version(Plan.INJECT) != version(Plan.FALLBACK)
    assert version(Plan.INSTALLED) not in (version(Plan.INJECT), version(Plan.FALLBACK))
    assert version(Plan.INJECT) != version(Plan.INJECT, "ghcr.io/agentworker/agent-operator:1")


@pytest.mark.parametrize("mode", [Mode.INJECT, Mode.INSTALLED])
def test_a_fallback_builds_the_pod_of_mode_off(mode: Mode) -> None:
    fallback = companions.Fallback(image=IMAGE, mode=mode, reason="NotLoaded", message="")
    assert template(official(companion={"mode": mode.value}), fallback=fallback) == template(
        official(companion={"mode": "Disabled"})
    )


def test_the_init_container_runs_the_companions_own_installer() -> None:
    from agentworker_companion import __main__ as installer

    command = template()["spec"]["initContainers"][0]["command"]
    assert command[:3] == ["python", "-m", installer.PACKAGE.name]
    assert installer.USAGE.split()[-2:] == ["install", "DIR"]
    assert command[3] == "install"
