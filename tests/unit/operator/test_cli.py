"""agent-operator's command line: all namespaces by default, --namespace repeatable."""

from __future__ import annotations

import pytest

from agentworker_operator import __main__ as cli
from agentworker_operator import settings

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def test_defaults_watch_all_namespaces_with_json_logs() -> None:
    config = cli.parse_args([])
    assert config.namespaces == ()
    assert config.log_format is settings.LogFormat.JSON
    assert config.lease.name == "agentworker-operator"
    assert config.lease.identity


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
