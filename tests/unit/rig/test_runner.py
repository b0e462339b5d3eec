"""The process runner's node options: taints for a runner of one's own, its pod IP range."""

from __future__ import annotations

import argparse

import pytest

from tests.rig import runner

pytestmark = pytest.mark.timeout(2)


@pytest.mark.parametrize(
    ("text", "taint"),
    [
        ("dev=me:NoSchedule", {"key": "dev", "value": "me", "effect": "NoSchedule"}),
        ("agentworker.dev/dev:NoExecute", {"key": "agentworker.dev/dev", "effect": "NoExecute"}),
    ],
)
def test_taint_is_parsed_from_key_value_effect(text: str, taint: dict[str, str]) -> None:
    assert runner.parse_taint(text) == taint


@pytest.mark.parametrize("text", ["dev=me", "=x:NoSchedule", "dev:Sometimes"])
def test_a_taint_without_key_or_known_effect_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a taint"):
        runner.parse_taint(text)


def test_pod_ips_come_from_the_prefix_and_are_never_shared() -> None:
    pool = runner.AddressPool("127.61")
    first, second = pool.take(None), pool.take(None)
    assert first.startswith("127.61.")
    assert first != second
    pool.give_back(first)
    assert pool.take(first) == first, "a restarted pod keeps its IP when free"
