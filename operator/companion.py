"""The companion: whether a `command` fleet gets it, and whether it works there. Pure.

An unmodified livekit-agents worker gets the worker contract (the retire handshake, /readyz,
/worker with its rooms, metrics, the spec's options) from the companion package
(`companion/agentworker_companion`): either an init container copies it into an emptyDir that
the worker's Python loads through PYTHONPATH and `sitecustomize` (Inject), or the image has the
`agentworker-companion` distribution installed, whose .pth file loads it (Installed). This
module owns the modes, the plan a pod template is built from, the verdict on the pods (did the
worker load it?), the record of a fallback in the status, and the Companion condition's words.
It does no I/O.

A fallback is remembered in `status.companion` with the image and the mode it was found with:
the fleet then runs without the companion (today's path: probes at /, deletion cost and
SIGTERM) until the image or the mode changes, when the companion is tried again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentworker_operator import kubelet

VOLUME = "agentworker-companion"
MOUNT_PATH = "/agentworker-companion"
INIT_CONTAINER = "agentworker-companion"
ENABLE_VARIABLE = "AGENTWORKER_COMPANION"
DISTRIBUTION = "agentworker-companion"
"""The companion's own distribution (companion/pyproject.toml), for mode Installed."""
TESTED_LINES = ("1.4", "1.6", "1.8")
"""livekit-agents minor lines the companion wraps (agentworker_companion.TESTED_LINES)."""


class Mode(enum.StrEnum):
    """spec.companion.mode."""

    INJECT = "Inject"
    """The operator injects it; when the worker does not load it, the fleet falls back."""
    INSTALLED = "Installed"
    """The image has the agentworker-companion distribution installed: the operator only turns
    it on (AGENTWORKER_COMPANION=1); when the worker does not load it, the fleet falls back."""
    DISABLED = "Disabled"
    """Today's path: probes at /, deletion cost and SIGTERM, no rooms, no metrics."""


class Plan(enum.Enum):
    """How the pod template treats the companion."""

    RUNTIME = "runtime"
    """This project's runtime (spec.entrypoint): it is the contract itself."""
    INJECT = "inject"
    INSTALLED = "installed"
    """The image's own copy (mode Installed): no init container, volume or PYTHONPATH."""
    OFF = "off"
    FALLBACK = "fallback"
    """Inject or Installed was asked for, and the worker did not load it on this image."""

    @property
    def loads_companion(self) -> bool:
        """The pods are told to load the companion (AGENTWORKER_COMPANION=1): the verdict
        watches whether they did."""
        return self in (Plan.INJECT, Plan.INSTALLED)

    @property
    def serves_contract(self) -> bool:
        """The worker answers /readyz, /healthz, /metrics and /retire."""
        return self is Plan.RUNTIME or self.loads_companion


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallback:
    """Why the companion does not run on `image` in `mode`."""

    image: str
    mode: Mode
    """The mode it was found in: another mode on the same image tries the companion again."""
    reason: str
    """CamelCase: NotLoaded, UnsupportedVersion, NotPython, InitContainerFailed."""
    message: str


def recorded_fallback(status: Mapping[str, Any]) -> Fallback | None:
    """The fallback stored in `status.companion`, if any."""
    record = status.get("companion")
    if not isinstance(record, Mapping) or record.get("state") != "Fallback":
        return None
    image, reason, mode = record.get("image"), record.get("reason"), record.get("mode")
    if not isinstance(image, str) or not isinstance(reason, str) or mode not in tuple(Mode):
        return None
    return Fallback(
        image=image, mode=Mode(mode), reason=reason, message=str(record.get("message") or "")
    )


def plan(*, entrypoint: bool, mode: Mode, image: str, fallback: Fallback | None) -> Plan:
    """The plan for a fleet: `entrypoint` (this runtime), the mode, its image, and the fallback
    found so far (which counts only on the image and in the mode it was found with)."""
    if entrypoint:
        return Plan.RUNTIME
    if mode is Mode.DISABLED:
        return Plan.OFF
    if fallback is not None and (fallback.image, fallback.mode) == (image, mode):
        return Plan.FALLBACK
    return Plan.INSTALLED if mode is Mode.INSTALLED else Plan.INJECT


def _init_failure(pod: Mapping[str, Any]) -> str:
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if not isinstance(status, Mapping) or status.get("name") != INIT_CONTAINER:
            continue
        reason, _ = kubelet.stuck(status)
        if reason:
            return reason
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One pod of the current template that loads the companion, and what its /worker said."""

    pod: Mapping[str, Any]
    answered: bool
    """It served a worker document (either dialect)."""
    companion: str = ""
    """The companion's version in that document; "" in livekit-agents' own."""
    sdk_version: str = ""
    project_type: str = ""
    refused: str = ""
    """The HTTP status it answered /worker with instead of a document ("HTTP 404"), if any:
    the companion serves /worker from its first moment, so another server holds the port."""


def _not_loaded(mode: Mode) -> tuple[str, str]:
    """Why a worker told to load the companion did not: in a word, and at length."""
    if mode is Mode.INSTALLED:
        lacks = f"the image lacks the {DISTRIBUTION} package"
        return lacks, (
            f"{lacks} in the site-packages of the Python that runs the worker (pip install it "
            "there: docs/agent-image.md)"
        )
    return "its Python did not load it", (
        f"its Python ignored PYTHONPATH ({MOUNT_PATH}), or runs with -I or -E"
    )


def verdict(image: str, mode: Mode, seen_pods: Sequence[Seen]) -> Fallback | None:
    """A fallback when a pod told to load the companion (in `mode`) shows it cannot work there,
    else None.

    A worker that answers livekit-agents' own /worker (no companion) did not load it; an init
    container that cannot run never lets the worker start.
    """
    briefly, at_length = _not_loaded(mode)
    for seen in seen_pods:
        name = str((seen.pod.get("metadata") or {}).get("name") or "")
        failed = _init_failure(seen.pod)
        if failed:
            return Fallback(
                image=image,
                mode=mode,
                reason="InitContainerFailed",
                message=f"the companion's init container on {name} is {failed} (is the "
                "operator's --companion-image pullable from the node?)",
            )
        if seen.refused and not seen.answered:
            return Fallback(
                image=image,
                mode=mode,
                reason="NotLoaded",
                message=f"the worker on {name} answers /worker with {seen.refused}: the "
                f"companion does not serve its port ({briefly}, or it is not a livekit-agents "
                "worker)",
            )
        if not seen.answered or seen.companion:
            continue
        project = seen.project_type or "python"
        version = seen.sdk_version
        if project != "python":
            return Fallback(
                image=image,
                mode=mode,
                reason="NotPython",
                message=f"the worker on {name} is a {project} worker; the companion is Python",
            )
        line = ".".join(version.split(".")[:2])
        if line not in TESTED_LINES:
            return Fallback(
                image=image,
                mode=mode,
                reason="UnsupportedVersion",
                message=f"the worker on {name} runs livekit-agents {version or '(unknown)'}, "
                f"outside the companion's tested lines {', '.join(TESTED_LINES)}",
            )
        return Fallback(
            image=image,
            mode=mode,
            reason="NotLoaded",
            message=f"the worker on {name} (livekit-agents {version}) did not load the "
            f"companion: {at_length}",
        )
    return None


def status_record(current: Plan, fallback: Fallback | None, mode: Mode) -> dict[str, Any] | None:
    """`status.companion`; None for this runtime's fleets (which need none)."""
    if current is Plan.RUNTIME:
        return None
    if current is Plan.FALLBACK and fallback is not None:
        return {
            "mode": mode.value,
            "state": "Fallback",
            "image": fallback.image,
            "reason": fallback.reason,
            "message": fallback.message,
        }
    states = {Plan.INJECT: "Injected", Plan.INSTALLED: "Installed", Plan.OFF: "Disabled"}
    return {"mode": mode.value, "state": states[current]}


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionWords:
    status: bool
    reason: str
    message: str


def condition(
    current: Plan, fallback: Fallback | None, serving: int, workers: int
) -> ConditionWords:
    """The Companion condition: True while the fleet's workers serve the contract through it."""
    if current is Plan.OFF:
        return ConditionWords(
            status=False,
            reason="Disabled",
            message="spec.companion.mode is Disabled: scale-down by deletion cost and SIGTERM, "
            "readiness at /, no rooms for call recovery, no worker metrics",
        )
    if current is Plan.FALLBACK and fallback is not None:
        return ConditionWords(
            status=False,
            reason=fallback.reason,
            message=f"{fallback.message}; the fleet runs without it (readiness at /, deletion "
            "cost and SIGTERM, no rooms, no metrics) until spec.image or the mode changes",
        )
    if workers and serving == workers:
        return ConditionWords(
            status=True,
            reason="Serving",
            message=f"all {workers} workers serve the worker contract through the companion",
        )
    return ConditionWords(
        status=False,
        reason="Waiting",
        message=f"{serving} of {workers} workers serve the worker contract through the companion",
    )
