"""The AgentWorker spec as a typed, frozen value: `parse_spec` turns the raw dict into it.

This module owns the meaning of every spec field and its default (the CRD declares the same
defaults; a unit test keeps the two in step); `podtemplate` owns what goes into the pod
(spec.podTemplate and the worker container's extra spec.ports), `policies` how fast the
autoscaler moves and the warm headroom it keeps. It does no I/O and imports no
kopf, kubernetes, aiohttp or prometheus_client. Bad input raises `InvalidSpecError` naming the
field, the value and what would be right; any other exception escaping `parse_spec` is a bug.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from agentworker_operator import companion as companions
from agentworker_operator import fields, policies
from agentworker_operator import podtemplate as podtemplates
from agentworker_operator.fields import JSON as JSON
from agentworker_operator.fields import InvalidSpecError as InvalidSpecError
from agentworker_operator.fields import parse_duration_s as parse_duration_s
from agentworker_operator.podtemplate import PROTECTION_ANNOTATIONS as PROTECTION_ANNOTATIONS
from agentworker_operator.podtemplate import ContainerPort as ContainerPort
from agentworker_operator.podtemplate import PodTemplate as PodTemplate
from agentworker_operator.policies import DEFAULT_SCALE_DOWN as DEFAULT_SCALE_DOWN
from agentworker_operator.policies import DEFAULT_SCALE_UP as DEFAULT_SCALE_UP
from agentworker_operator.policies import BusyWorkers as BusyWorkers
from agentworker_operator.policies import Headroom as Headroom
from agentworker_operator.policies import HeadroomUnit as HeadroomUnit
from agentworker_operator.policies import PolicyType as PolicyType
from agentworker_operator.policies import ScalingBehavior as ScalingBehavior
from agentworker_operator.policies import ScalingPolicy as ScalingPolicy
from agentworker_operator.policies import SelectPolicy as SelectPolicy

_ENTRYPOINT = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)
RESERVED_ENV_PREFIXES = ("AGENT_", "LIVEKIT_")
RESERVED_ENV_NAMES = frozenset({"POD_IP", companions.ENABLE_VARIABLE})


class WorkerType(enum.StrEnum):
    """How LiveKit dispatches jobs to the worker (the seeds' WorkerType)."""

    ROOM = "ROOM"
    PUBLISHER = "PUBLISHER"
    PARTICIPANT = "PARTICIPANT"


class LogLevel(enum.StrEnum):
    """The runtime's log level (the seeds' `--log-level`)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveKit:
    """Where the workers register."""

    url: str
    """ws:// or wss:// URL of the LiveKit server."""
    credentials_secret: str
    """Name of a Secret in the same namespace with keys LIVEKIT_API_KEY and LIVEKIT_API_SECRET."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMemory:
    """Per-job memory watchdog of the runtime."""

    warn_mb: int = 500
    """Log a warning when a job process uses more than this many MB; 0 disables."""
    limit_mb: int = 0
    """Kill a job process that uses more than this many MB; 0 disables."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """What the agent participant may do in the room (the seeds' WorkerPermissions)."""

    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_metadata: bool = True
    hidden: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Autoscaling:
    """Load-aware autoscaling. When disabled or paused the autoscaler decides nothing and the
    fleet keeps the size it has until spec.replicas changes (`sizing`)."""

    enabled: bool = False
    """The autoscaler sets the replicas (default false: spec.replicas does)."""
    paused: bool = False
    """Freeze an enabled autoscaler at the fleet's current size (default false): no scale-up
    nor scale-down decision until it is false again; calls stay protected, retirements are
    withdrawn, the dispatch guard keeps holding dispatches, and a change of spec.replicas
    resizes the fleet. A spec field rather than an annotation such as KEDA's
    `autoscaling.keda.sh/paused`: the API server validates it (an annotation with a typo in its
    key or value would pause nothing, silently), `kubectl explain` documents it, the generation
    it bumps shows in the conditions' observedGeneration when the operator has seen it, and
    it is the convention of Kubernetes' own objects (a Deployment's `spec.paused`, a CronJob's
    `spec.suspend`). It can still be set without editing a manifest (`kubectl patch`), and a
    GitOps tool that does not manage the field leaves it as set. Without `enabled` it means
    nothing: there is no autoscaler to pause."""
    min_replicas: int = 1
    max_replicas: int = 10
    target_load: float = 0.5
    """Average worker load the autoscaler aims at, in [0, 1]."""
    headroom: Headroom = field(default_factory=Headroom)
    """Warm headroom: 1 worker below its load threshold by default (minAvailableWorkers is
    the old spelling of headroom.workers), optionally raised by a miss-rate target."""
    scale_to_zero_after_s: float = 300.0
    """With minReplicas 0: seconds without a call or a waiting dispatch before the headroom
    goes too and the fleet may reach zero (default 5m)."""
    scale_up: ScalingBehavior = DEFAULT_SCALE_UP
    scale_down: ScalingBehavior = DEFAULT_SCALE_DOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovery:
    """What the operator does for the calls of a worker that died without draining."""

    redispatch: bool = False
    """Dispatch the agent again, once, into each room that still has a caller and no agent."""
    silence_timeout_s: float = 60.0
    """Seconds a worker may not answer before its calls count as lost (10 s to 1 h)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchGuard:
    """What the operator does for dispatches the LiveKit server could give to no worker."""

    enabled: bool = False
    """Hold each dispatch of the agent that has no job and dispatch it again, with the same
    metadata, once a worker can take it."""
    max_wait_s: float = 120.0
    """Seconds a dispatch may wait for a worker before the operator gives up on it."""


IntOrPercent: TypeAlias = int | str
"""A number of workers, or a percentage of the fleet such as "25%" (Kubernetes' IntOrString)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """How a new pod template replaces the workers: a RollingUpdate with maxUnavailable 0, so
    no old worker goes before its replacement is ready, and old workers drain their calls."""

    max_surge: IntOrPercent = "25%"
    """New workers started beyond the replicas while a rollout runs: a number, or a percentage
    of the replicas that Kubernetes rounds up (default 25%). At least 1 (or 1%): with
    maxUnavailable 0 a rollout of no surge could never start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DisruptionBudget:
    """The PodDisruptionBudget over the workers (voluntary evictions such as a node drain; an
    evicted worker still drains its calls). Exactly one of max_unavailable and min_available
    is set."""

    enabled: bool = True
    """The operator makes the budget (default true); false for none, for example when the
    user's own PodDisruptionBudget selects the workers (two on one pod block its eviction)."""
    max_unavailable: IntOrPercent | None = 1
    """Workers that may be evicted at once: a number or a percentage (default 1)."""
    min_available: IntOrPercent | None = None
    """Workers that must stay up instead: a number or a percentage."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentWorkerSpec:
    """A validated AgentWorker spec with every default applied."""

    agent_name: str = ""
    """Name for explicit dispatch; empty means automatic dispatch."""
    image: str
    image_pull_policy: str | None = None
    entrypoint: str = ""
    """module:function this runtime runs for each job; empty when `command` is set."""
    command: tuple[str, ...] = ()
    """The container's command for any other image (the official livekit-agents worker)."""
    args: tuple[str, ...] = ()
    """Arguments of `command`."""
    working_dir: str | None = None
    """The container's working directory; the image's WORKDIR when None."""
    worker_type: WorkerType = WorkerType.ROOM
    livekit: LiveKit
    load_threshold: float = 0.7
    """Load in [0, 1] above which a worker reports itself full."""
    drain_timeout_s: float = 1800.0
    """Seconds a draining worker waits for its jobs (default 30m)."""
    num_idle_processes: int = 3
    shutdown_process_timeout_s: float = 60.0
    """Seconds a job process gets for its shutdown hooks (default 60s)."""
    initialize_process_timeout_s: float = 10.0
    """Seconds a new job process gets to start and prewarm (default 10s)."""
    max_retry: int = 16
    """Reconnection attempts before a worker gives up (it drains its calls first)."""
    job_memory: JobMemory = JobMemory()
    permissions: Permissions = Permissions()
    log_level: LogLevel = LogLevel.INFO
    replicas: int = 1
    """Workers of a fleet the autoscaler does not size (disabled or paused): a change resizes
    it; until one, the fleet keeps its size. With autoscaling on, the first size."""
    autoscaling: Autoscaling = Autoscaling()
    recovery: Recovery = Recovery()
    dispatch_guard: DispatchGuard = DispatchGuard()
    companion_mode: companions.Mode = companions.Mode.INJECT
    """How a `command` fleet gets the worker contract (ignored with `entrypoint`)."""
    resources: Mapping[str, JSON] = field(default_factory=dict)
    env: tuple[Mapping[str, JSON], ...] = ()
    """User EnvVars, appended after the operator's own."""
    env_from: tuple[Mapping[str, JSON], ...] = ()
    """Kubernetes EnvFromSources (ConfigMaps, Secrets)."""
    volume_mounts: tuple[Mapping[str, JSON], ...] = ()
    """Kubernetes VolumeMounts of the worker container."""
    ports: tuple[ContainerPort, ...] = ()
    """Extra ports of the worker container, after its own 8081 ("http")."""
    startup_probe: Mapping[str, JSON] | None = None
    """A Kubernetes Probe for slow starts."""
    pod_template: PodTemplate = field(default_factory=PodTemplate)
    rollout: Rollout = Rollout()
    disruption_budget: DisruptionBudget = DisruptionBudget()


def parse_spec(raw: object) -> AgentWorkerSpec:
    """The typed spec of an AgentWorker's raw `spec`, defaults applied; InvalidSpecError if bad."""
    spec = fields.FieldReader(raw, "spec")
    replicas = spec.integer("replicas", 1, low=0, high=1000)
    program = _parse_program(spec)
    return AgentWorkerSpec(
        agent_name=spec.string("agentName", ""),
        image=spec.string("image", pattern=_IMAGE, expected="is not an image reference"),
        image_pull_policy=_pull_policy(spec),
        entrypoint=program[0],
        command=program[1],
        args=program[2],
        working_dir=spec.optional_string("workingDir"),
        worker_type=spec.choice("workerType", WorkerType, WorkerType.ROOM),
        livekit=_parse_livekit(spec.child("livekit")),
        load_threshold=spec.number("loadThreshold", 0.7, low=0.0, high=1.0),
        drain_timeout_s=spec.duration_s("drainTimeout", "30m"),
        num_idle_processes=spec.integer("numIdleProcesses", 3, low=0, high=100),
        shutdown_process_timeout_s=spec.duration_s("shutdownProcessTimeout", "60s", high_s=3600),
        initialize_process_timeout_s=spec.duration_s(
            "initializeProcessTimeout", "10s", high_s=3600
        ),
        max_retry=spec.integer("maxRetry", 16, low=0, high=1000),
        job_memory=_parse_job_memory(spec.child("jobMemory")),
        permissions=_parse_permissions(spec.child("permissions")),
        log_level=spec.choice("logLevel", LogLevel, LogLevel.INFO),
        replicas=replicas,
        autoscaling=_parse_autoscaling(spec.child("autoscaling"), spec),
        recovery=_parse_recovery(spec.child("recovery")),
        dispatch_guard=_parse_dispatch_guard(spec.child("dispatchGuard")),
        companion_mode=spec.child("companion").choice(
            "mode", companions.Mode, companions.Mode.INJECT
        ),
        resources=spec.json_object("resources"),
        env=_parse_env(spec),
        env_from=spec.objects("envFrom"),
        volume_mounts=spec.objects("volumeMounts", required=("name", "mountPath")),
        ports=podtemplates.parse_ports(spec),
        startup_probe=spec.json_object("startupProbe") or None,
        pod_template=podtemplates.parse_pod_template(spec.child("podTemplate")),
        rollout=_parse_rollout(spec.child("rollout")),
        disruption_budget=_parse_disruption_budget(spec.child("disruptionBudget")),
    )


_ONE_PROGRAM = (
    "sets both or neither of entrypoint and command; set exactly one: entrypoint for this "
    "project's runtime, command for any other image (the official livekit-agents worker)"
)


def _parse_program(spec: fields.FieldReader) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(entrypoint, command, args): exactly one way to say what the container runs."""
    has_entrypoint = spec.get("entrypoint") is not None
    command = tuple(_strings(spec, "command"))
    args = tuple(_strings(spec, "args"))
    if has_entrypoint == bool(command):
        raise InvalidSpecError(
            spec.path,
            sorted(k for k in ("entrypoint", "command") if spec.get(k) is not None),
            _ONE_PROGRAM,
        )
    if args and not command:
        raise InvalidSpecError(spec.at("args"), list(args), "goes with command, not entrypoint")
    if command:
        return "", command, args
    return spec.string("entrypoint", pattern=_ENTRYPOINT, expected=_ENTRYPOINT_HINT), (), ()


def _strings(spec: fields.FieldReader, key: str) -> list[str]:
    values = spec.json_list(key)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise InvalidSpecError(f"{spec.at(key)}[{i}]", value, "is not a string")
    return [str(v) for v in values]


_ENTRYPOINT_HINT = "is not a module:function entrypoint like my_agent.main:entrypoint"
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_IMAGE = re.compile(r"[^\s]+")


def _pull_policy(spec: fields.FieldReader) -> str | None:
    value = spec.optional_string("imagePullPolicy")
    if value is not None and value not in _PULL_POLICIES:
        raise InvalidSpecError(
            spec.at("imagePullPolicy"), value, "is not Always, IfNotPresent or Never"
        )
    return value


def _parse_livekit(livekit: fields.FieldReader) -> LiveKit:
    expected = "is not a ws:// or wss:// URL"
    url = livekit.string("url", pattern=re.compile(r"wss?://[^\s/]+.*"), expected=expected)
    try:  # what the LiveKit clients parse it with: an unbalanced [ or a bad port fails there
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (parsed on access)
    except ValueError as error:
        raise InvalidSpecError(livekit.at("url"), url, f"{expected} ({error})") from None
    if not parts.hostname:
        raise InvalidSpecError(livekit.at("url"), url, f"{expected} (no host)")
    secret = livekit.child("credentialsSecret").string(
        "name", pattern=_DNS_NAME, expected=_DNS_HINT
    )
    return LiveKit(url=url, credentials_secret=secret)


_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_DNS_HINT = "is not a Secret name (lowercase letters, digits, '-' and '.')"


def _parse_job_memory(memory: fields.FieldReader) -> JobMemory:
    warn = memory.integer("warnMB", 500, low=0, high=1_048_576)
    limit = memory.integer("limitMB", 0, low=0, high=1_048_576)
    if limit and warn > limit:
        raise InvalidSpecError(
            memory.at("limitMB"), limit, f"is below warnMB ({warn}); use 0 or >= warnMB"
        )
    return JobMemory(warn_mb=warn, limit_mb=limit)


def _parse_permissions(perms: fields.FieldReader) -> Permissions:
    return Permissions(
        can_publish=perms.boolean("canPublish", True),
        can_subscribe=perms.boolean("canSubscribe", True),
        can_publish_data=perms.boolean("canPublishData", True),
        can_update_metadata=perms.boolean("canUpdateMetadata", True),
        hidden=perms.boolean("hidden", False),
    )


def _parse_recovery(recovery: fields.FieldReader) -> Recovery:
    silence = recovery.duration_s(
        "silenceTimeout",
        "60s",
        high_s=3600,
        low_s=MIN_SILENCE_TIMEOUT_S,
        too_short="a stall that short is no death",
    )
    return Recovery(redispatch=recovery.boolean("redispatch", False), silence_timeout_s=silence)


MIN_SILENCE_TIMEOUT_S = 10.0


def _parse_dispatch_guard(guard: fields.FieldReader) -> DispatchGuard:
    wait = guard.duration_s(
        "maxWait",
        "2m",
        high_s=3600,
        low_s=MIN_GUARD_WAIT_S,
        too_short="a new worker needs longer to start",
    )
    return DispatchGuard(enabled=guard.boolean("enabled", False), max_wait_s=wait)


MIN_GUARD_WAIT_S = 10.0


def _parse_autoscaling(scaling: fields.FieldReader, spec: fields.FieldReader) -> Autoscaling:
    low = scaling.integer("minReplicas", 1, low=0, high=1000)
    high = scaling.integer("maxReplicas", 10, low=1, high=1000)
    if low > high:
        raise InvalidSpecError(scaling.at("minReplicas"), low, f"is above maxReplicas ({high})")
    enabled = scaling.boolean("enabled", False)
    if enabled and low == 0 and not spec.child("dispatchGuard").boolean("enabled", False):
        raise InvalidSpecError(
            scaling.at("minReplicas"),
            low,
            "is 0 without spec.dispatchGuard.enabled: the LiveKit server drops a dispatch that "
            "finds no worker, so the first call to an empty fleet would be lost",
        )
    target = scaling.number("targetLoad", 0.5, low=0.0, high=1.0)
    threshold = spec.number("loadThreshold", 0.7, low=0.0, high=1.0)
    if target > threshold:
        raise InvalidSpecError(
            scaling.at("targetLoad"), target, f"is above loadThreshold ({threshold:g})"
        )
    return Autoscaling(
        enabled=enabled,
        paused=scaling.boolean("paused", False),
        min_replicas=low,
        max_replicas=high,
        target_load=target,
        scale_to_zero_after_s=scaling.duration_s("scaleToZeroAfter", "5m", high_s=86400),
        headroom=policies.parse_headroom(scaling),
        scale_up=policies.parse_behavior(
            scaling.child("scaleUp"), DEFAULT_SCALE_UP, policies.SHORTHAND_UP
        ),
        scale_down=policies.parse_behavior(
            scaling.child("scaleDown"), DEFAULT_SCALE_DOWN, policies.SHORTHAND_DOWN, down=True
        ),
    )


def _parse_env(spec: fields.FieldReader) -> tuple[Mapping[str, JSON], ...]:
    env: list[Mapping[str, JSON]] = []
    seen: set[str] = set()
    for i, item in enumerate(spec.json_list("env")):
        var = fields.FieldReader(item, f"spec.env[{i}]")
        name = var.string(
            "name",
            pattern=re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*"),
            expected="is not an environment variable name",
        )
        if name.startswith(RESERVED_ENV_PREFIXES) or name in RESERVED_ENV_NAMES:
            raise InvalidSpecError(
                var.at("name"),
                name,
                "is set by the operator (AGENT_*, LIVEKIT_*, POD_IP, AGENTWORKER_COMPANION); "
                "use the spec field",
            )
        if name in seen:
            raise InvalidSpecError(var.at("name"), name, "is listed twice")
        seen.add(name)
        env.append(item)  # type: ignore[arg-type]  # fields.FieldReader checked it is a mapping
    return tuple(env)


_SURGE_ONLY = (
    "is always 0: no old worker goes before its replacement is ready, and old workers drain "
    "their calls; set maxSurge for a faster rollout"
)


def _parse_rollout(rollout: fields.FieldReader) -> Rollout:
    if rollout.get("maxUnavailable") is not None:
        raise InvalidSpecError(
            rollout.at("maxUnavailable"), rollout.get("maxUnavailable"), _SURGE_ONLY
        )
    return Rollout(max_surge=rollout.int_or_percent("maxSurge", "25%", low=1, high=1000))


def _parse_disruption_budget(budget: fields.FieldReader) -> DisruptionBudget:
    enabled = budget.boolean("enabled", True)
    if budget.get("minAvailable") is None:
        most = budget.int_or_percent("maxUnavailable", 1, low=0, high=1000)
        return DisruptionBudget(enabled=enabled, max_unavailable=most)
    if budget.get("maxUnavailable") is not None:
        raise InvalidSpecError(
            budget.path,
            {key: budget.get(key) for key in ("maxUnavailable", "minAvailable")},
            "sets both maxUnavailable and minAvailable; set one",
        )
    least = budget.int_or_percent("minAvailable", 0, low=0, high=1000)
    return DisruptionBudget(enabled=enabled, max_unavailable=None, min_available=least)
