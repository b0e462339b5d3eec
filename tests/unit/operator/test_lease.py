"""may_take: when a replica may write itself into the leader Lease."""

from __future__ import annotations

import datetime

import pytest

from agentworker_operator import lease

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

NOW = datetime.datetime(2026, 11, 23, 10, 0, 0, tzinfo=datetime.UTC)


def held_by(holder: str, renewed_s_ago: float, duration_s: int = 15) -> dict[str, object]:
    renewed = NOW - datetime.timedelta(seconds=renewed_s_ago)
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration_s,
        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"holderIdentity": ""}, True),
        (held_by("me", 1), True),
        (held_by("other", 1), False),
        (held_by("other", 14), False),
        (held_by("other", 16), True),
        ({"holderIdentity": "other", "renewTime": "garbage", "leaseDurationSeconds": 15}, True),
    ],
    ids=[
        "free",
        "released",
        "mine",
        "other-fresh",
        "other-nearly-expired",
        "other-expired",
        "unreadable-time",
    ],
)
def test_may_take(spec: dict[str, object], expected: bool) -> None:
    assert lease.may_take(spec, "me", NOW) is expected
