"""The command line without a server: where options come from, and usage errors."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from worker_runtime import cli
from worker_runtime.options import InvalidOption, WorkerOptions

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

TARGET = "examples.agents.prewarm:opts"


def parse(*argv: str) -> argparse.Namespace:
    return cli.parse_args(list(argv), with_target=True)


def test_version_prints_the_installed_distributions_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--version")
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"agent-worker {metadata.version('agentworker')}\n"


def test_a_flag_value_may_start_with_a_dash() -> None:
    """A token_urlsafe secret may start with "-": it is still the flag's value, as in click."""
    args = parse("start", TARGET, "--api-secret", "-Xy_z", "--api-key", "--url")
    assert (args.api_secret, args.api_key, args.url) == ("-Xy_z", "--url", None)


def test_flag_values_are_joined_only_before_a_double_dash() -> None:
    argv = ["start", "--url", "ws://x", "--", "--api-secret", "-s"]
    assert cli.join_flag_values(argv) == ["start", "--url=ws://x", "--", "--api-secret", "-s"]
    assert cli.join_flag_values(["start", "--api-secret"]) == ["start", "--api-secret"]


def test_target_may_be_an_options_object() -> None:
    opts = cli.options_from_target(parse("start", TARGET))
    assert opts.prewarm_fnc is not None


def test_target_may_be_an_entrypoint_with_prewarm_and_request_flags() -> None:
    args = parse(
        "start",
        "examples.agents.basic:entrypoint",
        "--prewarm",
        "examples.agents.prewarm:prewarm_fnc",
        "--request",
        "examples.agents.request_handler:request_fnc",
    )
    opts = cli.options_from_target(args)
    assert (opts.prewarm_fnc is not None, opts.request_fnc is not None) == (True, True)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("examples.agents.basic", "not module:function"),
        ("examples.agents.nowhere:entrypoint", "cannot import"),
        ("examples.agents.basic:nothing", "has no 'nothing'"),
    ],
)
def test_bad_target_is_a_usage_error(target: str, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        cli.options_from_target(parse("start", target))


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:1")
    monkeypatch.setenv("LIVEKIT_API_KEY", "env-key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "env-secret")
    args = parse("start", TARGET, "--url", "ws://127.0.0.1:2", "--api-key", "flag-key")
    opts = cli.resolve_options(cli.options_from_target(args), args)
    assert (opts.ws_url, opts.api_key, opts.api_secret) == (
        "ws://127.0.0.1:2",
        "flag-key",
        "env-secret",
    )


def test_missing_credentials_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    args = parse("start", TARGET, "--url", "ws://127.0.0.1:2")
    with pytest.raises(InvalidOption, match="LIVEKIT_API_KEY"):
        cli.resolve_options(
            WorkerOptions(cli.import_callable("examples.agents.basic:entrypoint")), args
        )


def test_unknown_subcommand_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as info:
        parse("serve", TARGET)
    assert info.value.code == 2
