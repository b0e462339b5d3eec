"""What an AgentWorker spec adds to the pod the operator builds: the `spec.podTemplate` overlay
and the worker container's extra `spec.ports`, typed and frozen.

This module owns what a user may put into the pod and what is refused because the operator
relies on it: its volumes, its containers' names, the worker's port 8081 ("http") and the
annotations that protect busy workers. Kubernetes objects the operator passes on (affinity,
tolerations, volumes, init containers, topology spread constraints, dnsConfig) stay plain JSON,
checked only where the operator adds to them or Kubernetes would refuse the whole Deployment
for them. `spec.parse_spec` calls it; bad input raises `fields.InvalidSpecError`. It does no
I/O and imports no kopf, kubernetes, aiohttp or prometheus_client.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentworker_operator import companion as companions
from agentworker_operator import fields
from agentworker_operator.fields import JSON, InvalidSpecError

WORKER_CONTAINER = "agent-worker"
"""Name of the worker container."""
WORKER_PORT = 8081
"""The worker's own port: health, readiness, /worker, /metrics and /retire."""
WORKER_PORT_NAME = "http"
"""The worker's port's name, which the probes and the metrics Service refer to."""

OPERATOR_VOLUMES = {"tmp": "/tmp", companions.VOLUME: companions.MOUNT_PATH}
"""The operator's volumes and where they are mounted."""
OPERATOR_CONTAINERS = {
    WORKER_CONTAINER: "the worker container",
    companions.INIT_CONTAINER: "the companion's init container",
}
"""The operator's containers (a pod's container names are unique across all its containers)."""

# Annotations the operator writes on busy pods so that no scale-down or node autoscaler removes
# them while they hold calls: a template value would switch that protection off.
PROTECTION_ANNOTATIONS = frozenset(
    {
        "controller.kubernetes.io/pod-deletion-cost",
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        "karpenter.sh/do-not-disrupt",
    }
)


class Protocol(enum.StrEnum):
    """A container port's protocol."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class DnsPolicy(enum.StrEnum):
    """The pod's dnsPolicy."""

    CLUSTER_FIRST = "ClusterFirst"
    CLUSTER_FIRST_WITH_HOST_NET = "ClusterFirstWithHostNet"
    DEFAULT = "Default"
    NONE = "None"
    """Only dnsConfig: it must name at least one nameserver."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort:
    """An extra port of the worker container (a Kubernetes ContainerPort without host ports)."""

    container_port: int
    """1 to 65535, never 8081 (the worker's own)."""
    name: str = ""
    """An IANA service name (at most 15 lowercase letters, digits and '-'), never "http";
    empty for none."""
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True, kw_only=True)
class PodTemplate:
    """Overlay on the pod the operator builds; security contexts merge over restricted ones."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[JSON, ...] = ()
    affinity: Mapping[str, JSON] | None = None
    topology_spread_constraints: tuple[Mapping[str, JSON], ...] = ()
    """Kubernetes TopologySpreadConstraints; the builder gives one without a labelSelector the
    fleet's pod selector."""
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    volumes: tuple[Mapping[str, JSON], ...] = ()
    """Kubernetes Volumes of the pod (the names tmp and agentworker-companion are the
    operator's)."""
    init_containers: tuple[Mapping[str, JSON], ...] = ()
    """Kubernetes Containers run after the companion's init container (when injected) and
    before the worker, in their order; one with restartPolicy Always is a native sidecar that
    runs beside the worker and stops after it."""
    priority_class_name: str | None = None
    runtime_class_name: str | None = None
    """RuntimeClass of the pods (gVisor, Kata, a GPU runtime); the cluster's default when
    None."""
    dns_policy: DnsPolicy | None = None
    """Kubernetes' default (ClusterFirst) when None."""
    dns_config: Mapping[str, JSON] | None = None
    """Kubernetes PodDNSConfig: nameservers, searches, options."""
    security_context: Mapping[str, JSON] = field(default_factory=dict)
    """Pod-level securityContext keys that replace the restricted defaults."""
    container_security_context: Mapping[str, JSON] = field(default_factory=dict)
    """Container-level securityContext keys that replace the restricted defaults."""


def parse_pod_template(template: fields.FieldReader) -> PodTemplate:
    """The overlay in `spec.podTemplate`; InvalidSpecError naming the field if bad."""
    pull_secrets = []
    for i, ref in enumerate(template.json_list("imagePullSecrets")):
        pull_secrets.append(
            fields.FieldReader(ref, f"{template.at('imagePullSecrets')}[{i}]").string("name")
        )
    dns_policy = None
    if template.get("dnsPolicy") is not None:
        dns_policy = template.choice("dnsPolicy", DnsPolicy, DnsPolicy.CLUSTER_FIRST)
    return PodTemplate(
        labels=template.string_map("labels"),
        annotations=_annotations(template),
        node_selector=template.string_map("nodeSelector"),
        tolerations=tuple(template.json_list("tolerations")),
        affinity=template.json_object("affinity") or None,
        topology_spread_constraints=_spread_constraints(template),
        service_account_name=template.optional_string("serviceAccountName"),
        image_pull_secrets=tuple(pull_secrets),
        volumes=_volumes(template),
        init_containers=_init_containers(template),
        priority_class_name=template.optional_string("priorityClassName"),
        runtime_class_name=_runtime_class(template),
        dns_policy=dns_policy,
        dns_config=_dns_config(template, dns_policy),
        security_context=template.json_object("securityContext"),
        container_security_context=template.json_object("containerSecurityContext"),
    )


def _annotations(template: fields.FieldReader) -> dict[str, str]:
    annotations = template.string_map("annotations")
    clashes = sorted(PROTECTION_ANNOTATIONS & annotations.keys())
    if clashes:
        raise InvalidSpecError(
            f"{template.at('annotations')}[{clashes[0]}]",
            annotations[clashes[0]],
            "is set by the operator on busy workers (it protects their calls); leave it out",
        )
    return annotations


def _volumes(template: fields.FieldReader) -> tuple[Mapping[str, JSON], ...]:
    volumes = template.objects("volumes", required=("name",))
    for i, volume in enumerate(volumes):
        name = volume.get("name")
        if isinstance(name, str) and name in OPERATOR_VOLUMES:
            raise InvalidSpecError(
                f"{template.at('volumes')}[{i}].name",
                name,
                f"is the operator's volume ({OPERATOR_VOLUMES[name]})",
            )
    return volumes


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SIDECAR = (
    "is not Always, the one restartPolicy an init container takes (a native sidecar that runs "
    "beside the worker and stops after it); leave it out for one that runs to completion first"
)


def _init_containers(template: fields.FieldReader) -> tuple[Mapping[str, JSON], ...]:
    key = "initContainers"
    containers = template.objects(key, required=("name", "image"))
    seen: set[str] = set()
    for i, container in enumerate(containers):
        item = fields.FieldReader(container, f"{template.at(key)}[{i}]")
        name = item.string(
            "name",
            pattern=_DNS_LABEL,
            expected="is not a container name (a DNS label: at most 63 lowercase letters, "
            "digits and '-')",
        )
        if name in OPERATOR_CONTAINERS:
            raise InvalidSpecError(
                item.at("name"), name, f"is the name of {OPERATOR_CONTAINERS[name]}; choose another"
            )
        if name in seen:
            raise InvalidSpecError(item.at("name"), name, "is listed twice")
        seen.add(name)
        item.string("image", pattern=re.compile(r"\S+"), expected="is not an image reference")
        restart = item.get("restartPolicy")
        if restart is not None and restart != "Always":
            raise InvalidSpecError(item.at("restartPolicy"), restart, _SIDECAR)
        item.json_object("securityContext")  # the restricted defaults merge under it
    return containers


_WHEN_UNSATISFIABLE = ("DoNotSchedule", "ScheduleAnyway")


def _spread_constraints(template: fields.FieldReader) -> tuple[Mapping[str, JSON], ...]:
    key = "topologySpreadConstraints"
    required = ("maxSkew", "topologyKey", "whenUnsatisfiable")
    constraints = template.objects(key, required=required)
    seen: set[tuple[str, object]] = set()
    for i, constraint in enumerate(constraints):
        item = fields.FieldReader(constraint, f"{template.at(key)}[{i}]")
        item.integer("maxSkew", 1, low=1, high=1000)
        topology_key = item.string(
            "topologyKey",
            pattern=re.compile(r"\S+"),
            expected="is not a node label key like topology.kubernetes.io/zone",
        )
        when = item.get("whenUnsatisfiable")
        if when not in _WHEN_UNSATISFIABLE:
            raise InvalidSpecError(
                item.at("whenUnsatisfiable"), when, "is not DoNotSchedule or ScheduleAnyway"
            )
        if item.get("labelSelector") is not None:
            item.json_object("labelSelector")
        if (topology_key, when) in seen:
            raise InvalidSpecError(
                item.at("topologyKey"),
                topology_key,
                f"is listed twice with whenUnsatisfiable {when} (Kubernetes refuses that)",
            )
        seen.add((topology_key, when))
    return constraints


def _runtime_class(template: fields.FieldReader) -> str | None:
    name = template.optional_string("runtimeClassName")
    if name is not None and not _DNS_SUBDOMAIN.fullmatch(name):
        raise InvalidSpecError(
            template.at("runtimeClassName"),
            name,
            "is not a RuntimeClass name (lowercase letters, digits, '-' and '.')",
        )
    return name


MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


def _dns_config(
    template: fields.FieldReader, policy: DnsPolicy | None
) -> Mapping[str, JSON] | None:
    config = template.json_object("dnsConfig")
    reader = fields.FieldReader(config, template.at("dnsConfig"))
    nameservers = _strings(reader, "nameservers", MAX_NAMESERVERS)
    for i, address in enumerate(nameservers):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            path = f"{reader.at('nameservers')}[{i}]"
            raise InvalidSpecError(path, address, "is not an IP address") from None
    _strings(reader, "searches", MAX_SEARCHES)
    for i, option in enumerate(reader.objects("options", required=("name",))):
        option_reader = fields.FieldReader(option, f"{reader.at('options')}[{i}]")
        option_reader.string("name")
        option_reader.optional_string("value")
    if policy is DnsPolicy.NONE and not nameservers:
        raise InvalidSpecError(
            reader.at("nameservers"),
            nameservers,
            "is empty while dnsPolicy is None: the pods would have no DNS server",
        )
    return config or None


def _strings(reader: fields.FieldReader, key: str, most: int) -> list[str]:
    values = reader.json_list(key)
    if len(values) > most:
        raise InvalidSpecError(reader.at(key), values, f"has more than {most} entries")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise InvalidSpecError(f"{reader.at(key)}[{i}]", value, "is not a non-empty string")
    return [str(value) for value in values]


def _is_port_name(name: str) -> bool:
    """An IANA service name, as Kubernetes wants a port's name."""
    return (
        bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?", name))
        and "--" not in name
        and any(c.isalpha() for c in name)
    )


def parse_ports(spec: fields.FieldReader) -> tuple[ContainerPort, ...]:
    """The worker container's extra `spec.ports`; none may be the worker's own port or name."""
    ports: list[ContainerPort] = []
    for i, raw in enumerate(spec.objects("ports", required=("containerPort",))):
        item = fields.FieldReader(raw, f"{spec.at('ports')}[{i}]")
        number = item.integer("containerPort", 0, low=1, high=65535)
        if number == WORKER_PORT:
            raise InvalidSpecError(
                item.at("containerPort"),
                number,
                f"is the worker's own port ({WORKER_PORT_NAME}: probes, /worker, /metrics); "
                "choose another",
            )
        name = item.string("name", "")
        if name == WORKER_PORT_NAME:
            raise InvalidSpecError(
                item.at("name"), name, f"is the name of the worker's own port ({WORKER_PORT})"
            )
        if name and not _is_port_name(name):
            raise InvalidSpecError(
                item.at("name"),
                name,
                "is not a port name (at most 15 lowercase letters, digits and single '-', "
                "with a letter)",
            )
        port = ContainerPort(
            container_port=number,
            name=name,
            protocol=item.choice("protocol", Protocol, Protocol.TCP),
        )
        for other in ports:
            if name and other.name == name:
                raise InvalidSpecError(item.at("name"), name, "is listed twice")
            if (other.container_port, other.protocol) == (number, port.protocol):
                raise InvalidSpecError(
                    item.at("containerPort"), number, f"is listed twice for {port.protocol}"
                )
        ports.append(port)
    return tuple(ports)
