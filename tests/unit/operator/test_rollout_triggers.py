"""Which changes roll the workers, and which cannot: what the credential rotation and the image
rollback in docs/install.md and docs/agent-image.md rest on.

A rollout is a new pod template (its hash, builders.TEMPLATE_HASH_ANNOTATION); the Deployment
rolls it with maxUnavailable 0 (test_builders) and old workers drain (tests/e2e/operator). The
credentials reach the pods by secretKeyRef only (test_builders'
test_credentials_come_from_the_secret_by_reference_only): the template names the Secret and holds
none of its values.
"""

from __future__ import annotations

from typing import Any

from agentworker_operator import builders, handlers
from agentworker_operator import spec as specs
from tests.unit.operator.test_spec import MINIMAL, with_

OWNER = builders.Owner(name="support", namespace="team-a", uid="0000-1111")


def template(raw: dict[str, Any]) -> dict[str, Any]:
    built: dict[str, Any] = builders.build_deployment(OWNER, specs.parse_spec(raw), replicas=2)
    return dict(built["spec"]["template"])


def template_hash(raw: dict[str, Any]) -> str:
    return builders.template_hash(OWNER, specs.parse_spec(raw))


def credential_refs(raw: dict[str, Any]) -> dict[str, Any]:
    env = template(raw)["spec"]["containers"][0]["env"]
    return {var["name"]: var["valueFrom"] for var in env if var["name"].startswith("LIVEKIT_API")}


def test_a_new_image_rolls_and_the_earlier_image_brings_the_earlier_template_back() -> None:
    good = with_("image", "registry.example.com/support-agent:1.0.0")
    bad = with_("image", "registry.example.com/support-agent:1.0.1")
    assert template_hash(bad) != template_hash(good)
    # back to the earlier image: exactly the earlier pod template, not a third one
    assert template(with_("image", "registry.example.com/support-agent:1.0.0")) == template(good)


def test_another_credentials_secret_rolls_the_workers_onto_its_keys() -> None:
    rotated = with_("livekit.credentialsSecret.name", "livekit-credentials-2")
    assert template_hash(rotated) != template_hash(MINIMAL)
    assert credential_refs(rotated) == {
        key: {"secretKeyRef": {"name": "livekit-credentials-2", "key": key}}
        for key in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    }


def test_a_pod_annotation_of_ones_own_rolls_the_workers() -> None:
    # how to restart a fleet on purpose, e.g. after new values in the same Secret
    stamped = with_("podTemplate.annotations", {"example.com/credentials-rotated": "2026-12-06"})
    assert template_hash(stamped) != template_hash(MINIMAL)


def test_no_handler_watches_secrets_so_new_values_in_one_roll_nothing() -> None:
    # kopf's registries (private, as in test_shard_filters): every resource a handler follows
    registries = (
        handlers.registry._changing,
        handlers.registry._watching,
        handlers.registry._spawning,
        handlers.registry._indexing,
        handlers.registry._webhooks,
    )
    followed = {
        selector.any_name for registry in registries for selector in registry.get_all_selectors()
    }
    assert followed == {"agentworkers", "pods", "deployments"}
