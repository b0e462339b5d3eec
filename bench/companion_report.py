"""What `bench.companion` measured, reduced to figures and tables: the official worker with and
without the companion, side by side.

Pure: (a) turns the samples of both sides into medians, their ratio, the ratio's 95 %
bootstrap interval (the noise: how far the ratio could move with this run's scatter; from a
fixed seed) and the verdict "within noise" (the interval holds 1) or not; (b) draws the seeded
Poisson arrival times and turns what each scale-down side recorded into the calls cut and the
worker-seconds its victims held. It reads no clock and no file, starts nothing and asserts
nothing: a missed target is a FAIL in a column.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

WITHOUT = "without-companion"
WITH = "with-companion"
SIDES = (WITHOUT, WITH)


# -- (a) overhead ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One measured quantity, the samples of both sides in the order they were taken."""

    key: str
    title: str
    unit: str
    without: Sequence[float]
    with_companion: Sequence[float]
    how: str = ""
    """One line on how it was measured, for the results file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OverheadRow:
    """A comparison reduced to medians, their ratio, its interval and the verdict."""

    key: str
    title: str
    unit: str
    without: float | None
    with_companion: float | None
    difference: float | None
    """with - without, in the unit."""
    ratio: float | None
    """with / without."""
    interval: tuple[float, float] | None
    """The ratio's 95 % bootstrap interval: how far it could move with this run's scatter."""
    verdict: str
    samples: tuple[int, int]


RESAMPLES = 2000
"""Bootstrap resamples behind a ratio's interval."""
BOOTSTRAP_SEED = 0
"""Fixed: the same samples always give the same interval."""


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio_interval(
    without: Sequence[float],
    with_companion: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """The 95 % bootstrap interval of median(with) / median(without): each side resampled with
    replacement, `resamples` times; None with fewer than 3 samples on a side."""
    if len(without) < 3 or len(with_companion) < 3:
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        base = statistics.median(rng.choices(without, k=len(without)))
        other = statistics.median(rng.choices(with_companion, k=len(with_companion)))
        if base:
            ratios.append(other / base)
    if len(ratios) < 2:
        return None
    cuts = statistics.quantiles(ratios, n=40)  # 2.5 % steps
    return cuts[0], cuts[-1]


def verdict(interval: tuple[float, float] | None) -> str:
    """Within noise when the ratio's interval holds 1 (no change), else which way it lies."""
    if interval is None:
        return "n/a"
    low, high = interval
    if low <= 1.0 <= high:
        return "within noise"
    return "higher, beyond noise" if low > 1.0 else "lower, beyond noise"


def summarize(comparison: Comparison) -> OverheadRow:
    without, companion = median(comparison.without), median(comparison.with_companion)
    difference = companion - without if companion is not None and without is not None else None
    ratio = companion / without if companion is not None and without else None
    interval = ratio_interval(comparison.without, comparison.with_companion)
    return OverheadRow(
        key=comparison.key,
        title=comparison.title,
        unit=comparison.unit,
        without=without,
        with_companion=companion,
        difference=difference,
        ratio=ratio,
        interval=interval,
        verdict=verdict(interval),
        samples=(len(comparison.without), len(comparison.with_companion)),
    )


def _number(value: float | None, unit: str, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    digits = 2 if unit == "s" else 1
    return f"{value:{'+' if signed else ''}.{digits}f} {unit}"


def render_overhead(rows: Sequence[OverheadRow]) -> str:
    """The overhead table in Markdown (medians)."""
    header = [
        "metric",
        WITHOUT,
        WITH,
        "difference",
        "ratio (with/without)",
        "noise: 95% interval",
        "verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{row.title} (n={row.samples[0]}/{row.samples[1]})",
            _number(row.without, row.unit),
            _number(row.with_companion, row.unit),
            _number(row.difference, row.unit, signed=True),
            "n/a" if row.ratio is None else f"{row.ratio:.3f}x",
            "n/a" if row.interval is None else "{:.3f}-{:.3f}x".format(*row.interval),
            row.verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overhead_json(comparison: Comparison, row: OverheadRow) -> dict[str, object]:
    """A comparison's samples and summary, ready for json.dumps."""
    return {
        "title": comparison.title,
        "unit": comparison.unit,
        "how": comparison.how,
        "samples": {WITHOUT: list(comparison.without), WITH: list(comparison.with_companion)},
        "median": {WITHOUT: row.without, WITH: row.with_companion},
        "difference": row.difference,
        "ratio_with_over_without": row.ratio,
        "ratio_interval_95": list(row.interval) if row.interval else None,
        "verdict": row.verdict,
    }


# -- (b) the victims' drain --------------------------------------------------------------------
def arrivals(seed: int, rate_per_s: float, duration_s: float) -> tuple[float, ...]:
    """Poisson arrival times (seconds from the start) in [0, duration_s), drawn from `seed`:
    the same seed gives both sides the same calls at the same moments."""
    rng = random.Random(seed)
    found: list[float] = []
    moment = rng.expovariate(rate_per_s)
    while moment < duration_s:
        found.append(round(moment, 3))
        moment += rng.expovariate(rate_per_s)
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class Victim:
    """A pod the scale-down removed, as Unix times."""

    pod: str
    marked_at: float
    """It got its deletionTimestamp (SIGTERM)."""
    gone_at: float | None
    """It was gone from the pod watch; None: still there when the watch ended."""
    calls: int = 0
    """Calls it held when it was sent SIGTERM (they drain)."""
    retired: bool = False
    """Its log says it retired (POST /retire) before it went."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainSide:
    """One scale-down of one side: the calls, the operator's decisions and the victims."""

    side: str
    round: int
    patched_at: float
    """The AgentWorker was patched to fewer replicas."""
    decisions: tuple[float, ...]
    """The operator's scale-down 'scaling' log lines after the patch."""
    observed_until: float
    """The end of the watch: a victim not gone by then held capacity at least until then."""
    victims: tuple[Victim, ...]
    dispatched: tuple[str, ...]
    started: tuple[str, ...]
    ended: Mapping[str, str]
    """Room -> how the call ended by its ledger ('completed', 'shutdown')."""
    final_pods: int
    timeline: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def decided_at(side: DrainSide, victim: Victim) -> float:
    """The decision that removed the victim: the last one before it was marked (the patch, when
    no decision line was read)."""
    return max((d for d in side.decisions if d <= victim.marked_at), default=side.patched_at)


def held_s(side: DrainSide, victim: Victim) -> float:
    """Seconds a victim held its capacity after the decision to remove it."""
    end = victim.gone_at if victim.gone_at is not None else side.observed_until
    return max(0.0, end - decided_at(side, victim))


def cut(side: DrainSide) -> tuple[str, ...]:
    """Calls that started and did not complete (no end line, or ended otherwise)."""
    return tuple(r for r in side.started if side.ended.get(r) != "completed")


def unanswered(side: DrainSide) -> tuple[str, ...]:
    """Calls dispatched that never started (no worker took them)."""
    started = set(side.started)
    return tuple(r for r in side.dispatched if r not in started)


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainTotals:
    """One side's scale-downs added up over the rounds."""

    rounds: int
    dispatched: int
    started: int
    cut: int
    unanswered: int
    victims: int
    retired: int
    busy_victims: int
    busy_calls: int
    held_s: float
    longest_held_s: float | None
    not_gone: int
    last_decision_s: float | None
    """From the patch to the operator's last scale-down decision, the longest of the rounds."""
    final_pods: tuple[int, ...]


def totals(sides: Sequence[DrainSide]) -> DrainTotals:
    held = [held_s(s, v) for s in sides for v in s.victims]
    victims = [v for s in sides for v in s.victims]
    waits = [max(s.decisions) - s.patched_at for s in sides if s.decisions]
    return DrainTotals(
        rounds=len(sides),
        dispatched=sum(len(s.dispatched) for s in sides),
        started=sum(len(s.started) for s in sides),
        cut=sum(len(cut(s)) for s in sides),
        unanswered=sum(len(unanswered(s)) for s in sides),
        victims=len(victims),
        retired=sum(v.retired for v in victims),
        busy_victims=sum(v.calls > 0 for v in victims),
        busy_calls=sum(v.calls for v in victims),
        held_s=sum(held),
        longest_held_s=max(held, default=None),
        not_gone=sum(v.gone_at is None for v in victims),
        last_decision_s=max(waits, default=None),
        final_pods=tuple(s.final_pods for s in sides),
    )


DRAIN_ROWS: tuple[tuple[str, Callable[[DrainTotals], str]], ...] = (
    ("calls dispatched (Poisson arrivals)", lambda t: str(t.dispatched)),
    ("calls started", lambda t: str(t.started)),
    ("**calls cut**", lambda t: f"**{t.cut}/{t.started}**"),
    ("target: 0 cut", lambda t: "PASS" if t.cut == 0 else "FAIL"),
    ("calls never started (no worker took them)", lambda t: str(t.unanswered)),
    ("victims (pods removed)", lambda t: str(t.victims)),
    ("of which retired first (POST /retire)", lambda t: str(t.retired)),
    ("of which sent SIGTERM holding calls", lambda t: f"{t.busy_victims} ({t.busy_calls} calls)"),
    ("**worker-seconds the victims held after the decision**", lambda t: f"**{t.held_s:.1f} s**"),
    ("longest: decision -> victim gone", lambda t: _seconds(t.longest_held_s)),
    ("victims still there when the watch ended", lambda t: str(t.not_gone)),
    ("patch -> the operator's last scale-down decision", lambda t: _seconds(t.last_decision_s)),
    ("pods at the end", lambda t: ", ".join(str(n) for n in t.final_pods)),
)


def render_drain(sides: Sequence[DrainSide]) -> str:
    """Both sides' scale-downs, added up over the rounds, side by side in Markdown."""
    found = {side: totals([s for s in sides if s.side == side]) for side in SIDES}
    columns = [side for side in SIDES if found[side].rounds]
    lines = ["| " + " | ".join(["", *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for title, cell in DRAIN_ROWS:
        lines.append("| " + " | ".join([title, *(cell(found[side]) for side in columns)]) + " |")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def drain_json(side: DrainSide) -> dict[str, object]:
    """One side's round with its figures, ready for json.dumps."""
    return {
        "side": side.side,
        "round": side.round,
        "patched_at": side.patched_at,
        "decisions": list(side.decisions),
        "dispatched": list(side.dispatched),
        "started": list(side.started),
        "ended_how": dict(side.ended),
        "cut": list(cut(side)),
        "never_started": list(unanswered(side)),
        "victims": [
            {
                "pod": v.pod,
                "marked_at": v.marked_at,
                "gone_at": v.gone_at,
                "calls_at_sigterm": v.calls,
                "retired": v.retired,
                "decided_at": decided_at(side, v),
                "held_s": round(held_s(side, v), 3),
            }
            for v in side.victims
        ],
        "final_pods": side.final_pods,
        "timeline": list(side.timeline),
        "problems": list(side.problems),
    }
