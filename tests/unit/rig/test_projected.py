"""The process runner projects service account volumes and renews their tokens as a kubelet does."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from tests.rig import projected

pytestmark = pytest.mark.timeout(2)

UTC = datetime.UTC
ISSUED = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NAMESPACE_REF = {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
# What the ServiceAccount admission plugin adds to a pod that automounts its token.
KUBE_API_ACCESS: dict[str, Any] = {
    "defaultMode": 420,
    "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": NAMESPACE_REF}]}},
    ],
}
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "op-1", "namespace": "ops", "uid": "u-1"},
        "spec": {"serviceAccountName": "operator", **spec},
    }


def admitted_pod() -> dict[str, Any]:
    mount = {"name": "kube-api-access-x1", "mountPath": SA_PATH, "readOnly": True}
    return pod(
        volumes=[{"name": "kube-api-access-x1", "projected": KUBE_API_ACCESS}],
        containers=[{"name": "app", "command": ["run"], "volumeMounts": [mount]}],
    )


def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    objects = {
        ("ConfigMap", "ops", "kube-root-ca.crt"): {"ca.crt": "-----BEGIN CERTIFICATE-----"},
        ("Secret", "ops", "extra"): {"a": "1", "b": "2"},
    }
    return objects.get((kind, namespace, name))


def tokens(key: projected.TokenKey) -> projected.IssuedToken:
    audience = ",".join(key.audiences) or "api"
    expires = ISSUED + datetime.timedelta(seconds=key.expiration_s)
    return projected.IssuedToken(f"jwt-for-{audience}", expires, key.expiration_s)


def files_of(volume: dict[str, Any]) -> dict[str, tuple[bytes, int]]:
    found = projected.project(volume, pod(), "127.0.1.9", "127.0.0.1", lookup, tokens)
    return {f.path: (f.data, f.mode) for f in found}


def test_admitted_volume_holds_token_ca_and_namespace_with_the_default_mode() -> None:
    assert files_of(KUBE_API_ACCESS) == {
        "token": (b"jwt-for-api", 0o644),
        "ca.crt": (b"-----BEGIN CERTIFICATE-----", 0o644),
        "namespace": (b"ops", 0o644),
    }


def test_token_key_carries_audience_and_lifetime_and_defaults_to_an_hour() -> None:
    volume = {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}]}
    assert projected.token_keys(volume) == [projected.TokenKey(("vault",), 3600)]
    assert projected.token_keys(KUBE_API_ACCESS) == [projected.TokenKey((), 3607)]


def test_item_mode_wins_over_default_mode_and_secret_without_items_projects_every_key() -> None:
    volume = {
        "defaultMode": 0o600,
        "sources": [
            {"secret": {"name": "extra"}},
            {"secret": {"name": "extra", "items": [{"key": "a", "path": "x/a", "mode": 0o400}]}},
        ],
    }
    assert files_of(volume) == {"a": (b"1", 0o600), "b": (b"2", 0o600), "x/a": (b"1", 0o400)}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"configMap": {"name": "absent"}}, 'configmap "absent" not found'),
        ({"secret": {"name": "extra", "items": [{"key": "c", "path": "c"}]}},
         "references non-existent secret key: c"),
        ({"clusterTrustBundle": {"path": "b"}}, "is not emulated"),
    ],
    ids=["missing-config-map", "missing-key", "unknown-source"],
)  # fmt: skip
def test_a_volume_that_cannot_be_projected_yet_names_why(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(projected.VolumeError, match=message):
        files_of({"sources": [source]})


def test_optional_missing_config_map_projects_nothing() -> None:
    assert files_of({"sources": [{"configMap": {"name": "absent", "optional": True}}]}) == {}


def test_only_projected_volumes_mounted_under_var_run_secrets_are_emulated() -> None:
    elsewhere = {"name": "tokens", "mountPath": "/etc/tokens"}
    spec = admitted_pod()["spec"]
    spec["volumes"] += [
        {"name": "tokens", "projected": KUBE_API_ACCESS},
        {"name": "tmp", "emptyDir": {}},
    ]
    spec["containers"][0]["volumeMounts"] += [elsewhere, {"name": "tmp", "mountPath": "/tmp"}]
    assert list(projected.projected_volumes({"spec": spec})) == ["kube-api-access-x1"]


def test_automount_false_means_no_volume_in_the_spec_so_nothing_to_emulate() -> None:
    # The admission plugin honours the pod's and the ServiceAccount's automountServiceAccountToken
    # by not adding the volume; the runner only follows the spec.
    bare = pod(automountServiceAccountToken=False, containers=[{"name": "app"}])
    assert projected.projected_volumes(bare) == {}


def test_bind_mounts_follow_the_containers_own_mounts() -> None:
    spec = admitted_pod()["spec"]
    spec["containers"].append({"name": "sidecar", "command": ["s"]})
    dirs = {"kube-api-access-x1": "/rig/pods/u-1/volumes/kubernetes.io~projected/kube-api-x1"}
    app, sidecar = spec["containers"]
    assert projected.bind_mounts(app, dirs) == [
        projected.BindMount(dirs["kube-api-access-x1"], SA_PATH, read_only=True)
    ]
    assert projected.bind_mounts(sidecar, dirs) == []


COMPANION = "/agentworker-companion"


def companion_pod() -> dict[str, Any]:
    """The operator's companion: an init container fills an emptyDir the app imports from."""
    companion = {"name": "companion", "mountPath": COMPANION}
    tmp = {"name": "tmp", "mountPath": "/tmp"}
    return pod(
        volumes=[{"name": "companion", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        initContainers=[{"name": "agentworker-companion", "volumeMounts": [companion]}],
        containers=[
            {"name": "app", "volumeMounts": [tmp, {**companion, "readOnly": True}]},
        ],
    )


def test_empty_dirs_are_emulated_under_the_companion_prefix_but_not_at_tmp() -> None:
    # Tests read what the pods' processes leave in the host's /tmp.
    assert projected.empty_dir_volumes(companion_pod()) == ["companion"]


@pytest.mark.parametrize(
    ("mount", "emulated"),
    [
        ({"mountPath": COMPANION}, True),
        ({"mountPath": f"{COMPANION}/"}, True),
        ({"mountPath": f"{COMPANION}/pkg"}, True),
        ({"mountPath": f"{COMPANION}-old"}, False),
        ({"mountPath": "/tmp"}, False),
        ({"mountPath": f"{COMPANION}/../tmp"}, False),
        ({"mountPath": COMPANION, "subPath": "pkg"}, False),
    ],
    ids=["the-prefix", "trailing-slash", "below", "sibling", "tmp", "dot-dot", "sub-path"],
)
def test_an_empty_dir_path_is_emulated_at_or_below_its_prefix_only(
    mount: dict[str, Any], emulated: bool
) -> None:
    assert projected.emulated_path(mount, projected.EMPTY_DIR_PREFIXES) is emulated


def test_init_and_app_containers_bind_the_same_empty_dir_and_readonly_is_kept() -> None:
    spec = companion_pod()["spec"]
    source = "/rig/pods/u-1/volumes/kubernetes.io~empty-dir/companion"
    empty_dirs = {"companion": source, "tmp": "/rig/pods/u-1/volumes/kubernetes.io~empty-dir/tmp"}
    (init,), (app,) = spec["initContainers"], spec["containers"]
    assert projected.bind_mounts(init, {}, empty_dirs) == [
        projected.BindMount(source, COMPANION, read_only=False)
    ]
    assert projected.bind_mounts(app, {}, empty_dirs) == [
        projected.BindMount(source, COMPANION, read_only=True)
    ], "never at /tmp, even when the volume is handed over"


def test_each_volume_kind_is_mounted_under_its_own_prefixes_only() -> None:
    mounts = [
        {"name": "token", "mountPath": f"{COMPANION}/token"},
        {"name": "scratch", "mountPath": f"{SA_PATH}/scratch"},
    ]
    container = {"name": "app", "volumeMounts": mounts}
    assert projected.bind_mounts(container, {"token": "/p"}, {"scratch": "/e"}) == []


def test_mount_namespace_command_binds_then_execs_the_container_argv() -> None:
    mounts = [projected.BindMount("/src", SA_PATH, read_only=True)]
    argv = projected.in_mount_namespace(mounts, ["agent-operator", "--x"], "/usr/bin/unshare")
    assert argv[:5] == ["/usr/bin/unshare", "--mount", "--propagation", "private", "--"]
    assert argv[-6:] == ["/src", SA_PATH, "ro", "--", "agent-operator", "--x"]
    assert "exec" in argv[7]


def test_no_mounts_leaves_the_argv_alone() -> None:
    assert projected.in_mount_namespace([], ["run"], "/usr/bin/unshare") == ["run"]


def issued(lifetime_s: int) -> projected.IssuedToken:
    return projected.IssuedToken("t", ISSUED + datetime.timedelta(seconds=lifetime_s), lifetime_s)


@pytest.mark.parametrize(
    ("lifetime_s", "age_s", "jitter_s", "due"),
    [
        (3607, 0, 0, False),
        (3607, 2885, 0, False),  # just under 80 % of the lifetime
        (3607, 2886, 0, True),  # just past it
        (3607, 2880, 10, True),  # the jitter renews a little earlier
        (7 * 86400, 86399, 0, False),
        (7 * 86400, 86401, 0, True),  # older than a day renews whatever the lifetime
    ],
    ids=["fresh", "before-80pct", "after-80pct", "jitter", "long-lived-young", "a-day-old"],
)
def test_token_renews_past_80_percent_of_its_lifetime_or_a_day(
    lifetime_s: int, age_s: int, jitter_s: float, due: bool
) -> None:
    now = ISSUED + datetime.timedelta(seconds=age_s)
    assert projected.refresh_due(issued(lifetime_s), now, jitter_s) is due
