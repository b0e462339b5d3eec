"""What the scaling benchmark measured, reduced to figures and tables.

Pure: holds the samples of `bench.scaling` (reaction trials, scale-down sides), turns them into
the breakdown, the calls lost and medians, and renders the Markdown tables. It reads no clock and
no file, starts nothing and asserts nothing: a missed target is a FAIL in a column.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NO_END = "no end line"
"""How a call ended when its worker was killed before it could record the end."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionTrial:
    """One scale-up, 1 -> 2 workers, as Unix times (None: not seen)."""

    third_call_at: float
    """The ledger's 'start' line of the call that made the one worker full."""
    decided_at: float | None
    """The operator's 'scaling' log line (1 -> 2)."""
    pod_created_at: float | None
    """The new pod first read from the pod watch."""
    process_started_at: float | None
    """The new worker's own 'starting worker' log line."""
    registered_at: float | None
    """The new worker's own 'registered with LiveKit' log line."""
    pod: str = ""
    event: str = ""
    """The ScaledUp Event's message."""
    problems: tuple[str, ...] = ()
    side: str = ""
    """How the operator learned of the full worker (`REACTION_SIDES`)."""


STEPS: tuple[tuple[str, str], ...] = (
    ("decide_s", "third call started -> operator decided"),
    ("create_s", "operator decided -> new pod created"),
    ("start_s", "pod created -> worker process logged its start"),
    ("register_s", "worker process started -> registered with LiveKit"),
)
TOTAL = ("total_s", "third call started -> new worker registered")
REACTION_SIDES = ("long polls (default)", "periodic reads only (--no-worker-watch)")
"""The operator's two ways to learn that a worker changed, measured side by side."""


def _gap(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def breakdown(trial: ReactionTrial) -> dict[str, float | None]:
    """The trial's steps in seconds (None where a moment was not seen), and the total."""
    moments = (
        trial.third_call_at,
        trial.decided_at,
        trial.pod_created_at,
        trial.process_started_at,
        trial.registered_at,
    )
    steps = {
        key: _gap(a, b) for (key, _), a, b in zip(STEPS, moments[:-1], moments[1:], strict=True)
    }
    return {**steps, TOTAL[0]: _gap(trial.third_call_at, trial.registered_at)}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDownSide:
    """One side of the headline: 10 calls running, the fleet scaled 3 -> 1."""

    side: str
    operator: bool
    """This operator's side: its target is 0 calls lost."""
    how: str
    """What scaled it down, for the table's notes."""
    rooms: tuple[str, ...]
    real_rooms: tuple[str, ...]
    ended: Mapping[str, str]
    """Room -> how the call ended by its ledger ('completed', 'shutdown', ...)."""
    cut_callers: tuple[str, ...]
    """Real calls whose caller saw the agent leave without "bye" or too early."""
    callers_unknown: tuple[str, ...] = ()
    """Real calls whose caller had no outcome in time (counted as cut)."""
    calls_per_pod: Mapping[str, int] = field(default_factory=dict)
    """Pod IP -> calls it held when the scale-down began."""
    busy_sigtermed: Mapping[str, int] = field(default_factory=dict)
    """Pod -> calls it held when it was marked for deletion (sent SIGTERM)."""
    replicas_one_after_s: float | None = None
    """From the scale-down to the Deployment asking for 1 replica."""
    one_live_pod_after_s: float | None = None
    """From the scale-down to 1 pod not being deleted."""
    one_pod_after_s: float | None = None
    """From the scale-down to 1 pod at all (the others drained, or were killed, and are gone)."""
    final_pods: int = 0
    scale_log: tuple[str, ...] = ()
    """The scale steps as seen (operator Events), with their offsets."""
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Losses:
    """Calls lost on one side, and why."""

    killed: tuple[str, ...]
    """No 'end' line: the process was SIGKILLed at the grace period."""
    ended_early: tuple[str, ...]
    """An 'end' line with how != completed."""
    cut: tuple[str, ...]
    """Real calls whose caller saw them cut (or had no outcome)."""

    @property
    def lost(self) -> tuple[str, ...]:
        return tuple(sorted({*self.killed, *self.ended_early, *self.cut}))


def losses(side: ScaleDownSide) -> Losses:
    """Which of the side's calls were lost: killed, ended early, or cut for their caller."""
    killed = tuple(r for r in side.rooms if r not in side.ended)
    early = tuple(r for r in side.rooms if r in side.ended and side.ended[r] != "completed")
    return Losses(
        killed=killed,
        ended_early=early,
        cut=tuple(sorted({*side.cut_callers, *side.callers_unknown})),
    )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def render_reaction(trials: Sequence[ReactionTrial]) -> str:
    """The reaction table: each step's median, min and max, and every trial's value."""
    rows = [breakdown(t) for t in trials]
    header = ["step", "median", "min", "max", *(f"trial {i + 1}" for i in range(len(trials)))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title in (*STEPS, TOTAL):
        values = [row[key] for row in rows]
        present = [v for v in values if v is not None]
        cells = [
            f"**{title}**" if key == TOTAL[0] else title,
            _seconds(median(values)),
            _seconds(min(present) if present else None),
            _seconds(max(present) if present else None),
            *(_seconds(v) for v in values),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_reaction_sides(trials: Sequence[ReactionTrial]) -> str:
    """Each step's median per side, and the ratio of the first side's to the second's."""
    by_side = {side: [t for t in trials if t.side == side] for side in REACTION_SIDES}
    header = ["step", *(f"{side}, median (n={len(by_side[side])})" for side in REACTION_SIDES)]
    header.append("ratio")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title in (*STEPS, TOTAL):
        medians = [median([breakdown(t)[key] for t in by_side[side]]) for side in REACTION_SIDES]
        first, second = medians
        ratio = f"{first / second:.2f}" if first is not None and second else "-"
        name = f"**{title}**" if key == TOTAL[0] else title
        lines.append("| " + " | ".join([name, *(_seconds(m) for m in medians), ratio]) + " |")
    return "\n".join(lines)


def render_scaledown(sides: Sequence[ScaleDownSide]) -> str:
    """The headline side by side: calls lost per side, and how long 3 -> 1 took."""
    lost = [losses(s) for s in sides]
    header = ["", *(s.side for s in sides)]

    def row(title: str, cells: Sequence[str]) -> str:
        return "| " + " | ".join([title, *cells]) + " |"

    verdict = [
        ("FAIL" if loss.lost else "PASS") if s.operator else "-"
        for s, loss in zip(sides, lost, strict=True)
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        row(
            "**calls lost**",
            [f"**{len(x.lost)}/{len(s.rooms)}**" for s, x in zip(sides, lost, strict=True)],
        ),
        row("of which killed (no end line)", [str(len(x.killed)) for x in lost]),
        row("of which ended early", [str(len(x.ended_early)) for x in lost]),
        row(
            "real calls cut, seen by the caller",
            [f"{len(x.cut)}/{len(s.real_rooms)}" for s, x in zip(sides, lost, strict=True)],
        ),
        row("target: 0 lost (operator)", verdict),
        row("calls per worker at the scale-down", [_spread(s.calls_per_pod) for s in sides]),
        row("workers sent SIGTERM holding calls", [_busy(s.busy_sigtermed) for s in sides]),
        row("-> Deployment at 1 replica", [_seconds(s.replicas_one_after_s) for s in sides]),
        row("-> 1 pod not being deleted", [_seconds(s.one_live_pod_after_s) for s in sides]),
        row("-> 1 pod left at all", [_seconds(s.one_pod_after_s) for s in sides]),
        row("pods at the end", [str(s.final_pods) for s in sides]),
    ]
    return "\n".join(lines)


def _spread(calls_per_pod: Mapping[str, int]) -> str:
    return " + ".join(str(n) for n in sorted(calls_per_pod.values(), reverse=True)) or "n/a"


def _busy(busy: Mapping[str, int]) -> str:
    if not busy:
        return "0"
    return f"{len(busy)} ({' + '.join(str(n) for n in sorted(busy.values(), reverse=True))} calls)"


def to_json(sides: Sequence[ScaleDownSide]) -> dict[str, object]:
    """Each side with its losses, ready for json.dumps."""
    found: dict[str, object] = {}
    for side in sides:
        loss = losses(side)
        found[side.side] = {
            "operator": side.operator,
            "how": side.how,
            "calls": len(side.rooms),
            "real_calls": len(side.real_rooms),
            "lost": len(loss.lost),
            "lost_rooms": list(loss.lost),
            "killed": list(loss.killed),
            "ended_early": {r: side.ended[r] for r in loss.ended_early},
            "cut_real_calls": list(loss.cut),
            "callers_without_outcome": list(side.callers_unknown),
            "calls_per_pod_ip": dict(side.calls_per_pod),
            "busy_pods_sent_sigterm": dict(side.busy_sigtermed),
            "ended_how": dict(side.ended),
            "replicas_one_after_s": side.replicas_one_after_s,
            "one_live_pod_after_s": side.one_live_pod_after_s,
            "one_pod_after_s": side.one_pod_after_s,
            "final_pods": side.final_pods,
            "scale_log": list(side.scale_log),
            "problems": list(side.problems),
        }
    return found
