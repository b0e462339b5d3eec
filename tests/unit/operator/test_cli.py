"""agent-operator's command line: all namespaces by default, --namespace repeatable."""

from __future__ import annotations

from importlib import metadata
from typing import cast

import pytest

from agentworker_operator import __main__ as cli
from agentworker_operator import builders, kube, settings

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def test_defaults_watch_all_namespaces_with_json_logs() -> None:
    config = cli.parse_args([])
    assert config.namespaces == ()
    assert config.log_format is settings.LogFormat.JSON
    assert config.lease.name == "agentworker-operator"
    assert config.lease.identity


def test_version_prints_the_installed_distributions_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"agent-operator {metadata.version('agentworker')}\n"


def test_the_default_companion_image_is_the_operators_own_release() -> None:
    expected = f"ghcr.io/agentworker/agent-operator:{metadata.version('agentworker')}"
    assert cli.parse_args([]).companion_image == expected


def test_namespace_is_repeatable_and_lease_flags_apply() -> None:
    config = cli.parse_args(
        ["--namespace", "a", "--namespace=b", "--identity=x", "--lease-duration=30"]
    )
    assert config.namespaces == ("a", "b")
    assert config.lease.identity == "x"
    assert (config.lease.duration_s, config.lease.renew_every_s) == (30.0, 10.0)


def test_pod_name_is_the_default_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "agentworker-operator-7d9f-abcde")
    assert cli.parse_args([]).lease.identity == "agentworker-operator-7d9f-abcde"


def test_one_shard_by_default_and_shards_set_by_flag() -> None:
    assert cli.parse_args([]).shards == 1
    assert cli.parse_args(["--shards=4"]).shards == 4


@pytest.mark.parametrize("value", ["0", "-2"])
def test_fewer_than_one_shard_is_refused_naming_the_value(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args([f"--shards={value}"])
    assert f"--shards {value}: there must be 1 shard or more" in capsys.readouterr().err


def test_the_own_pod_comes_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert cli.parse_args([]).pod is None  # outside a pod: nothing to label
    monkeypatch.setenv("POD_NAME", "agentworker-operator-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "agentworker")
    assert cli.parse_args([]).pod == settings.PodRef(
        namespace="agentworker", name="agentworker-operator-7d9f-abcde"
    )


class Recorder:
    """`Kube.request`, recorded; `refuse` makes it fail as an RBAC refusal does."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.refuse = refuse

    async def request(self, method: str, path: str, **kw: object) -> dict[str, object]:
        self.calls.append((method, path, kw.get("body")))
        if self.refuse:
            raise kube.KubeError(403, "Forbidden", "pods is forbidden")
        return {}


async def test_the_lease_holder_labels_its_pod_and_takes_the_label_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pod = settings.PodRef(namespace="agentworker", name="op-1")
    client = Recorder()
    await cli._label_holder(cast(kube.Kube, client), pod, holding=True)
    await cli._label_holder(cast(kube.Kube, client), pod, holding=False)
    await cli._label_holder(cast(kube.Kube, client), None, holding=True)  # not in a pod
    path = "/api/v1/namespaces/agentworker/pods/op-1"
    assert client.calls == [
        ("PATCH", path, {"metadata": {"labels": {builders.LEASE_HOLDER_LABEL: "true"}}}),
        ("PATCH", path, {"metadata": {"labels": {builders.LEASE_HOLDER_LABEL: None}}}),
    ]
    refused = Recorder(refuse=True)
    await cli._label_holder(cast(kube.Kube, refused), pod, holding=True)  # logged, not raised
    assert "could not label this pod as the lease holder" in caplog.text
