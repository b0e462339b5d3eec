"""The control Secret against the rig's API server: the operator writes over its own, never a
Secret of the same name that someone else made (the JSON patch's `test` op, answered 422)."""

from __future__ import annotations

import secrets

import pytest
import yaml

from agentworker_operator import builders, kube
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import example, get_json
from tests.rig import env as rig_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAME = "basic-agent"


def agentworker(kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str) -> builders.Owner:
    """A real AgentWorker to own the Secrets: with a dangling owner reference, the garbage
    collector would delete them under the test."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(example(rig, replicas=0)))
    uid = get_json(kubectl, "agentworker", NAME, "-n", namespace)["metadata"]["uid"]
    return builders.Owner(name=NAME, namespace=namespace, uid=uid)


async def test_the_agentworkers_own_control_secret_gets_the_new_token(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str
) -> None:
    owner = agentworker(kubectl, rig, namespace)
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with kube.Kube.connect(kube.load_connection()) as client:
        await client.create(builders.build_control_secret(owner, old))
        manifest = builders.build_control_secret(owner, new)
        assert await client.patch_owned_secret(manifest, owner.uid)
        written = await client.secret_values(namespace, builders.control_secret_name(owner))
    assert written == {builders.CONTROL_TOKEN_KEY: new}


async def test_a_users_secret_of_the_control_secrets_name_is_left_as_it_is(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str
) -> None:
    owner = agentworker(kubectl, rig, namespace)
    name = builders.control_secret_name(owner)
    users = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"password": "not the operator's"},
    }
    async with kube.Kube.connect(kube.load_connection()) as client:
        await client.create(users)
        manifest = builders.build_control_secret(owner, secrets.token_urlsafe(32))
        assert not await client.patch_owned_secret(manifest, owner.uid)
        kept = await client.get(kube.path_of("v1", "Secret", namespace, name))
        assert kept is not None
        assert "ownerReferences" not in kept["metadata"], "not adopted, so never collected"
        assert await client.secret_values(namespace, name) == {"password": "not the operator's"}


async def test_a_control_secret_gone_meanwhile_is_an_api_error_not_a_refusal(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, crd: str
) -> None:
    owner = agentworker(kubectl, rig, namespace)
    manifest = builders.build_control_secret(owner, secrets.token_urlsafe(32))
    async with kube.Kube.connect(kube.load_connection()) as client:
        with pytest.raises(kube.KubeError) as gone:
            await client.patch_owned_secret(manifest, owner.uid)
    assert gone.value.status == 404
