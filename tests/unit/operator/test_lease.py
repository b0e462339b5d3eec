"""Leader election by client-go's rules: expiry by the local clock from the last change seen."""

from __future__ import annotations

import pytest

from agentworker_operator import lease

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def held_by(holder: str, renew_time: str = "2026-11-23T10:00:00.000000Z") -> dict[str, object]:
    return {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew_time}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, True, id="free"),
        pytest.param({"holderIdentity": ""}, True, id="released"),
        pytest.param(held_by("me"), True, id="mine"),
    ],
)
def test_a_free_or_own_lease_may_be_taken_at_once(spec: dict[str, object], expected: bool) -> None:
    assert lease.may_take(spec, "me", None, 0.0) is expected


def test_another_holders_lease_is_never_taken_on_first_sight() -> None:
    spec = held_by("other", "2020-01-01T00:00:00.000000Z")  # an ancient renewTime: no matter
    assert not lease.may_take(spec, "me", None, 1000.0)
    seen = lease.observe(None, spec, 1000.0)
    assert not lease.may_take(spec, "me", seen, 1000.0)


def test_expiry_counts_from_when_the_record_was_last_seen_to_change_by_the_local_clock() -> None:
    first = held_by("other", "2026-11-23T10:00:00.000000Z")
    seen = lease.observe(None, first, 100.0)
    assert lease.observe(seen, first, 110.0) is seen, "an unchanged record keeps its time"
    assert not lease.may_take(first, "me", seen, 114.0)
    assert lease.may_take(first, "me", seen, 115.5)
    renewed = held_by("other", "2026-11-23T10:00:05.000000Z")
    seen_again = lease.observe(seen, renewed, 115.5)
    assert seen_again.at_s == 115.5
    assert not lease.may_take(renewed, "me", seen_again, 116.0), "a renewal restarts the count"


def test_a_holder_clock_far_in_the_future_does_not_keep_the_lease_forever() -> None:
    spec = held_by("other", "2099-01-01T00:00:00.000000Z")
    seen = lease.observe(None, spec, 0.0)
    assert lease.may_take(spec, "me", seen, 16.0)
