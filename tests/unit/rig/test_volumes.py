"""The process runner writes projected files as a kubelet's AtomicWriter does."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.rig import projected, volumes

pytestmark = pytest.mark.timeout(2)


def files(**contents: str) -> list[projected.ProjectedFile]:
    return [projected.ProjectedFile(path, data.encode(), 0o644) for path, data in contents.items()]


def test_files_are_links_into_a_data_dir_swapped_by_one_rename(tmp_path: Path) -> None:
    assert volumes.write_atomically(tmp_path, files(token="one", namespace="ops"))
    first = os.readlink(tmp_path / "..data")
    assert os.readlink(tmp_path / "token") == "..data/token"
    assert (tmp_path / "token").read_text() == "one"
    assert volumes.write_atomically(tmp_path, files(token="two", namespace="ops"))
    assert (tmp_path / "token").read_text() == "two"
    assert os.readlink(tmp_path / "..data") != first
    assert not (tmp_path / first).exists(), "the previous data dir is removed"


def test_unchanged_contents_are_not_rewritten(tmp_path: Path) -> None:
    volumes.write_atomically(tmp_path, files(token="one"))
    data = os.readlink(tmp_path / "..data")
    assert not volumes.write_atomically(tmp_path, files(token="one"))
    assert os.readlink(tmp_path / "..data") == data


def test_a_file_no_longer_projected_disappears(tmp_path: Path) -> None:
    volumes.write_atomically(tmp_path, files(token="t", extra="x"))
    volumes.write_atomically(tmp_path, files(token="t"))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("..")) == ["token"]


def test_modes_are_applied(tmp_path: Path) -> None:
    volumes.write_atomically(tmp_path, [projected.ProjectedFile("key", b"k", 0o600)])
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600


class FakeCore:
    """The TokenRequest call of CoreV1Api: each token lives `lifetime_s` from now."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    def create_namespaced_service_account_token(
        self, name: str, namespace: str, body: dict[str, Any]
    ) -> SimpleNamespace:
        self.requests.append((name, namespace, body))
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.lifetime_s)
        token = f"token-{len(self.requests)}"
        return SimpleNamespace(status=SimpleNamespace(token=token, expiration_timestamp=expires))


def lookup(kind: str, namespace: str, name: str) -> dict[str, str] | None:
    return {"ca.crt": "CA"} if (kind, name) == ("ConfigMap", "kube-root-ca.crt") else None


POD: dict[str, Any] = {
    "metadata": {"name": "op-1", "namespace": "ops", "uid": "u-1"},
    "spec": {
        "serviceAccountName": "operator",
        "volumes": [
            {
                "name": "kube-api-access-1",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt"}},
                    ]
                },
            }
        ],
        "containers": [
            {
                "name": "app",
                "volumeMounts": [
                    {
                        "name": "kube-api-access-1",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
            }
        ],
    },
}


def pod_volumes(core: FakeCore, root: Path) -> volumes.PodVolumes:
    pod_volumes = volumes.PodVolumes(core, POD, root)  # type: ignore[arg-type]  # a fake client
    pod_volumes.jitter_s = 0.0
    return pod_volumes


def test_token_is_requested_bound_to_the_pod_and_renewed_once_80_percent_has_passed(
    tmp_path: Path,
) -> None:
    core = FakeCore(lifetime_s=3607)
    volume_set = pod_volumes(core, tmp_path)
    volume_set.set_up("127.0.1.2", "127.0.0.1", lookup)
    directory = (
        tmp_path / "pods" / "u-1" / "volumes" / "kubernetes.io~projected" / "kube-api-access-1"
    )
    assert (directory / "token").read_text() == "token-1"
    name, namespace, body = core.requests[0]
    assert (name, namespace) == ("operator", "ops")
    assert body["spec"]["boundObjectRef"] == {
        "apiVersion": "v1", "kind": "Pod", "name": "op-1", "uid": "u-1",
    }  # fmt: skip
    assert body["spec"]["expirationSeconds"] == 3607
    volume_set.renew("127.0.1.2", "127.0.0.1", lookup)
    assert len(core.requests) == 1, "a fresh token is kept"
    core.lifetime_s = 60  # the next token is issued with only 60 s of 3607 left: past 80 %
    volume_set.tokens.clear()
    volume_set.set_up("127.0.1.2", "127.0.0.1", lookup)
    assert (directory / "token").read_text() == "token-2"
    core.lifetime_s = 3607
    volume_set.renew("127.0.1.2", "127.0.0.1", lookup)
    assert (directory / "token").read_text() == "token-3", "renewed before it expires"
    volume_set.remove()
    assert not (tmp_path / "pods" / "u-1").exists()


COMPANION_POD: dict[str, Any] = {
    "metadata": {"name": "worker-1", "namespace": "ops", "uid": "u-2"},
    "spec": {
        "volumes": [{"name": "companion", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "initContainers": [
            {
                "name": "agentworker-companion",
                "volumeMounts": [{"name": "companion", "mountPath": "/agentworker-companion"}],
            }
        ],
        "containers": [
            {
                "name": "app",
                "volumeMounts": [
                    {"name": "companion", "mountPath": "/agentworker-companion"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
    },
}


def companion_volumes(root: Path) -> volumes.PodVolumes:
    return volumes.PodVolumes(FakeCore(3607), COMPANION_POD, root)  # type: ignore[arg-type]


def test_empty_dir_is_made_in_the_kubelet_layout_and_shared_by_init_and_app(
    tmp_path: Path,
) -> None:
    volume_set = companion_volumes(tmp_path)
    volume_set.set_up("127.0.1.3", "127.0.0.1", lookup)
    directory = tmp_path / "pods" / "u-2" / "volumes" / "kubernetes.io~empty-dir" / "companion"
    assert directory.is_dir()
    assert directory.stat().st_mode & 0o777 == 0o777
    assert list(directory.iterdir()) == []
    init, app = COMPANION_POD["spec"]["initContainers"][0], COMPANION_POD["spec"]["containers"][0]
    shared = projected.BindMount(str(directory), "/agentworker-companion", read_only=False)
    assert volume_set.mounts(init) == volume_set.mounts(app) == [shared]
    assert not (directory.parent / "tmp").exists(), "/tmp stays the host's"


def test_empty_dir_keeps_its_contents_across_set_ups_and_runners_and_goes_with_the_pod(
    tmp_path: Path,
) -> None:
    volume_set = companion_volumes(tmp_path)
    volume_set.set_up("127.0.1.3", "127.0.0.1", lookup)
    written = Path(volume_set.empty_dirs["companion"]) / "x"
    written.write_text("hi")
    volume_set.set_up("127.0.1.3", "127.0.0.1", lookup)  # a renewal or a container's restart
    adopted = companion_volumes(tmp_path)  # a restarted runner's view of the same pod
    adopted.set_up("127.0.1.3", "127.0.0.1", lookup)
    assert written.read_text() == "hi"
    adopted.remove()
    assert not (tmp_path / "pods" / "u-2").exists()
