"""The chart's image references: registry, repository, tag and digest apart, as in KEDA's chart.

Every image the chart names (the operator's, the `helm test` pod's, and the companion's that it
gives the operator as --companion-image) is `<registry>/<repository>` then `@<digest>`, else
`:<tag>` (the chart's appVersion when empty), so that a mirror is set with the registry alone.
These tests only run `helm template`: they need the rig's helm build, not a running rig.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.chart.conftest import CHART, Render, documents

pytestmark = pytest.mark.timeout(120)  # helm renders the whole chart, the CRD with it, each time

DIGEST = "sha256:" + "0123456789abcdef" * 4
APP_VERSION = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
OPERATOR = "agentworker/agent-operator"
EVERY_FEATURE = (
    "--set=webhook.enabled=true",
    "--set=rbac.readCredentialSecrets=true",
    "--set=prometheus.serviceMonitor.enabled=true",
    "--set=prometheus.podMonitor.enabled=true",
    "--set=prometheus.prometheusRule.enabled=true",
    "--set=grafana.dashboard.enabled=true",
    "--set=sharding.shards=2",
)
"""Every optional object on, so that an image any template adds is among those checked."""


def pod_specs(node: Any) -> Iterator[dict[str, Any]]:
    """Every pod spec in a rendered object: anything with a list of containers."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for value in node.values():
            yield from pod_specs(value)
    elif isinstance(node, list):
        for item in node:
            yield from pod_specs(item)


def images(objects: list[dict[str, Any]]) -> list[str]:
    """The image of every container and init container in the rendered objects."""
    return [
        container["image"]
        for spec in (s for o in objects for s in pod_specs(o))
        for key in ("initContainers", "containers")
        for container in spec.get(key, [])
    ]


def companion_images(objects: list[dict[str, Any]]) -> list[str]:
    """The operator's --companion-image, in each container that passes one."""
    return [
        arg.removeprefix("--companion-image=")
        for spec in (s for o in objects for s in pod_specs(o))
        for container in spec["containers"]
        for arg in container.get("args", [])
        if arg.startswith("--companion-image=")
    ]


def rendered(render: Render, *args: str) -> list[dict[str, Any]]:
    return documents(render("aw", *args).stdout)


def test_by_default_every_image_is_the_operator_from_ghcr_at_the_app_version(
    render: Render,
) -> None:
    objects = rendered(render)
    expected = f"ghcr.io/{OPERATOR}:{APP_VERSION}"
    assert images(objects) == [expected, expected], "the operator and the helm test pod"
    assert companion_images(objects) == [expected]


@pytest.mark.parametrize("features", [(), EVERY_FEATURE], ids=["defaults", "every-feature"])
def test_a_mirror_set_as_the_registry_alone_serves_every_image(
    render: Render, features: tuple[str, ...]
) -> None:
    objects = rendered(render, "--set", "image.registry=my-mirror.example.com", *features)
    found = images(objects) + companion_images(objects)
    assert len(found) >= 3, found
    assert all(i == f"my-mirror.example.com/{OPERATOR}:{APP_VERSION}" for i in found), found


def test_a_mirror_with_a_path_keeps_the_repository_after_it(render: Render) -> None:
    """An ECR pull-through cache: its host and the rule's prefix make the registry."""
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ghcr"
    objects = rendered(render, "--set", f"image.registry={registry}")
    found = images(objects) + companion_images(objects)
    assert set(found) == {f"{registry}/{OPERATOR}:{APP_VERSION}"}


def test_the_digest_wins_over_the_tag_in_every_image(render: Render) -> None:
    objects = rendered(render, "--set", "image.tag=1.2.3", "--set", f"image.digest={DIGEST}")
    found = images(objects) + companion_images(objects)
    assert len(found) == 3
    assert set(found) == {f"ghcr.io/{OPERATOR}@{DIGEST}"}, "no tag beside the digest"


def test_a_tag_of_its_own_replaces_the_app_version(render: Render) -> None:
    objects = rendered(render, "--set", "image.tag=0.0.1-dev")
    assert set(images(objects) + companion_images(objects)) == {f"ghcr.io/{OPERATOR}:0.0.1-dev"}


def test_an_empty_registry_takes_the_repository_as_the_whole_name(render: Render) -> None:
    objects = rendered(
        render,
        "--set", "image.registry=",
        "--set", "image.repository=registry.local:5000/team/agent-operator",
    )  # fmt: skip
    found = set(images(objects) + companion_images(objects))
    assert found == {f"registry.local:5000/team/agent-operator:{APP_VERSION}"}


def test_a_repository_that_names_a_host_still_gets_the_registry_in_front(render: Render) -> None:
    """KEDA's convention, said in values.yaml: the two are joined as they are."""
    objects = rendered(render, "--set", f"image.repository=ghcr.io/{OPERATOR}")
    assert set(images(objects)) == {f"ghcr.io/ghcr.io/{OPERATOR}:{APP_VERSION}"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, f"ghcr.io/{OPERATOR}:{APP_VERSION}"),
        ({"image.registry": "mirror.io"}, f"mirror.io/{OPERATOR}:{APP_VERSION}"),
        ({"companionImage.registry": "other.io"}, f"other.io/{OPERATOR}:{APP_VERSION}"),
        ({"image.tag": "1.0.0"}, f"ghcr.io/{OPERATOR}:1.0.0"),
        ({"image.digest": DIGEST}, f"ghcr.io/{OPERATOR}@{DIGEST}"),
        ({"companionImage.tag": "0.3.1"}, f"ghcr.io/{OPERATOR}:0.3.1"),
        (
            {"image.registry": "mirror.io", "companionImage.repository": "acme/companion"},
            f"mirror.io/acme/companion:{APP_VERSION}",
        ),
        (
            {"image.tag": "1.0.0", "image.digest": DIGEST,
             "companionImage.repository": "acme/companion"},
            f"ghcr.io/acme/companion:{APP_VERSION}",
        ),
        (
            {"companionImage.repository": "acme/companion", "companionImage.tag": "2.0.0",
             "companionImage.digest": DIGEST},
            f"ghcr.io/acme/companion@{DIGEST}",
        ),
    ],
    ids=["the-operator-image", "follows-the-operators-registry", "registry-of-its-own",
         "follows-the-operators-tag", "follows-the-operators-digest", "tag-of-its-own",
         "repository-of-its-own-on-the-operators-registry",
         "repository-of-its-own-ignores-the-operators-tag-and-digest",
         "its-digest-wins-over-its-tag"],
)  # fmt: skip
def test_the_companion_image_takes_from_the_operator_image_the_parts_it_leaves_empty(
    render: Render, values: dict[str, str], expected: str
) -> None:
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    assert companion_images(rendered(render, *sets)) == [expected]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image.registry": "https://ghcr.io"}, "at '/image/registry'"),
        ({"image.registry": "ghcr.io/"}, "at '/image/registry'"),
        ({"image.repository": f"{OPERATOR}:1.0.0"}, "at '/image/repository'"),
        ({"image.repository": ""}, "at '/image/repository'"),
        ({"image.tag": "release/1"}, "at '/image/tag'"),
        ({"image.digest": "latest"}, "at '/image/digest'"),
        ({"companionImage": f"ghcr.io/{OPERATOR}:1.0.0"}, "at '/companionImage': got string"),
        ({"companionImage.registry": "https://mirror.io"}, "at '/companionImage/registry'"),
        ({"companionImage.repository": "acme/companion@sha256"}, "at '/companionImage/repository'"),
        ({"companionImage.image": "x"}, "additional properties 'image' not allowed"),
    ],
    ids=["registry-with-scheme", "registry-with-trailing-slash", "repository-with-tag",
         "empty-repository", "tag-with-slash", "digest-not-a-digest",
         "companion-as-one-string", "companion-registry-with-scheme",
         "companion-repository-with-digest", "companion-unknown-key"],
)  # fmt: skip
def test_malformed_image_parts_are_refused_naming_the_value(
    render: Render, values: dict[str, str], message: str
) -> None:
    sets = [arg for key, value in values.items() for arg in ("--set-string", f"{key}={value}")]
    done = render("aw", *sets, check=False)
    assert done.returncode != 0, done.stdout[:200]
    assert message in done.stderr, done.stderr
