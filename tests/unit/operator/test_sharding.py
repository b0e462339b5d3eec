"""The split of an installation's AgentWorkers into shards: stable, fair, one owner per key."""

from __future__ import annotations

import collections
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_operator import sharding

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40)
counts = st.integers(min_value=1, max_value=16)


@pytest.mark.parametrize(
    ("namespace", "name", "shards", "expected"),
    [
        pytest.param("default", "basic-agent", 2, 0, id="default/basic-agent-of-2"),
        pytest.param("default", "basic-agent", 10, 6, id="default/basic-agent-of-10"),
        pytest.param("team-a", "support", 3, 2, id="team-a/support-of-3"),
        pytest.param("shop", "voice", 5, 0, id="shop/voice-of-5"),
    ],
)
def test_a_key_lands_in_the_same_shard_in_every_process_and_release(
    namespace: str, name: str, shards: int, expected: int
) -> None:
    """Pinned values: a running installation's processes (and the benchmark) must agree."""
    assert sharding.shard_of(namespace, name, shards) == expected


def test_the_shard_is_the_first_eight_bytes_of_the_sha256_of_namespace_slash_name() -> None:
    digest = hashlib.sha256(b"shop/voice").digest()
    assert sharding.shard_of("shop", "voice", 7) == int.from_bytes(digest[:8], "big") % 7


def test_namespace_and_name_are_not_confused_across_the_slash() -> None:
    spread = {sharding.shard_of(f"ns-{i}", "agent", 4) for i in range(64)}
    assert spread == {0, 1, 2, 3}, "one name in many namespaces spreads too"


@settings(deadline=None, max_examples=100)
@given(namespace=names, name=names, shards=counts)
def test_exactly_one_shard_owns_each_agentworker(namespace: str, name: str, shards: int) -> None:
    owners = [
        index
        for index in range(shards)
        if sharding.Shard(index=index, count=shards).owns((namespace, name))
    ]
    assert owners == [sharding.shard_of(namespace, name, shards)]


@pytest.mark.timeout(10)  # each example hashes 4,000 keys (0.3 s in all, alone)
@settings(deadline=None, max_examples=40)
@given(namespace=names, prefix=names, shards=st.integers(min_value=2, max_value=8))
def test_one_namespace_of_many_agentworkers_spreads_fairly_over_the_shards(
    namespace: str, prefix: str, shards: int
) -> None:
    """4,000 AgentWorkers named as a fleet names them, all in one namespace: each shard gets
    its share within 20 % (a binomial spread of at most 5 standard deviations)."""
    total = 4000
    counted = collections.Counter(
        sharding.shard_of(namespace, f"{prefix}-{i}", shards) for i in range(total)
    )
    share = total / shards
    assert set(counted) == set(range(shards))
    assert all(0.8 * share <= n <= 1.2 * share for n in counted.values()), counted


def test_an_installation_of_one_shard_owns_everything() -> None:
    assert sharding.WHOLE.owns(("any", "thing"))
    assert sharding.Shard(index=0, count=1) == sharding.WHOLE


@pytest.mark.parametrize(
    ("index", "count"),
    [pytest.param(0, 0, id="no-shards"), pytest.param(2, 2, id="index-past-count"),
     pytest.param(-1, 2, id="negative-index")],
)  # fmt: skip
def test_a_shard_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        sharding.Shard(index=index, count=count)


def test_zero_shards_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="shards: 0 is not"):
        sharding.shard_of("ns", "name", 0)


@pytest.mark.parametrize(
    ("shards", "index", "expected"),
    [
        pytest.param(1, 0, "agentworker-operator", id="one-shard-keeps-the-leader-lease-name"),
        pytest.param(2, 0, "agentworker-operator-shard-0", id="first-of-two"),
        pytest.param(4, 3, "agentworker-operator-shard-3", id="last-of-four"),
    ],
)
def test_lease_names(shards: int, index: int, expected: str) -> None:
    assert sharding.lease_name("agentworker-operator", index, shards) == expected


@settings(deadline=None, max_examples=100)
@given(identity=names, shards=counts)
def test_a_process_tries_every_shard_once_from_the_one_its_identity_picks(
    identity: str, shards: int
) -> None:
    order = sharding.lease_order(identity, shards)
    assert sorted(order) == list(range(shards))
    assert order == [(order[0] + step) % shards for step in range(shards)]
    assert order == sharding.lease_order(identity, shards), "the same identity, the same order"


def test_processes_starting_together_mostly_try_different_shards_first() -> None:
    firsts = collections.Counter(sharding.lease_order(f"operator-{i}", 4)[0] for i in range(200))
    assert set(firsts) == {0, 1, 2, 3}
    assert max(firsts.values()) < 80, firsts
