"""Leader election against the rig's API server: one holder at a time, release hands over."""

from __future__ import annotations

import pytest

from agentworker_operator import kube, lease, settings
from tests.rig import env as rig_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def config(namespace: str, identity: str) -> settings.LeaseSettings:
    return settings.LeaseSettings(name="test-lease", namespace=namespace, identity=identity)


async def test_second_replica_waits_until_the_holder_releases(
    rig: rig_env.RigEnv, namespace: str
) -> None:
    connection = kube.load_connection()
    async with kube.Kube.connect(connection) as client:
        first = lease.LeaderLease(client, config(namespace, "a"))
        second = lease.LeaderLease(client, config(namespace, "b"))
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await first.try_acquire(), "the holder renews"
        await first.release()
        assert await second.try_acquire()
        assert not await first.try_acquire()
