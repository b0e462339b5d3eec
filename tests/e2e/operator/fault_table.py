"""The fault suite's table: one row per fault, with the calls it counted.

Each fault test appends a row (JSON lines in the rig's logs directory); the e2e run prints the
table at its end (`pytest_terminal_summary` in this package's conftest), so a CI log carries it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.rig import env as rig_env

FILE_NAME = "fault-table.jsonl"


@dataclass(frozen=True, slots=True)
class Row:
    fault: str
    running: int
    """Calls running when the fault hit."""
    completed: int
    """Calls that ran their full time, with no caller seeing its agent leave early."""
    lost: int
    recovery_s: float
    """From the end of the fault to the sign of recovery named in `recovered`."""
    recovered: str
    """What recovery meant for this fault."""
    note: str = ""


def path() -> Path:
    return rig_env.load().logs_dir / FILE_NAME


def record(row: Row) -> None:
    with path().open("a") as out:
        out.write(json.dumps(asdict(row)) + "\n")


def rows(since: float = 0.0) -> list[Row]:
    """The rows written since `since` (a file modification time), oldest first."""
    try:
        file = path()
        if file.stat().st_mtime < since:
            return []
        lines = file.read_text().splitlines()
    except (OSError, RuntimeError):
        return []
    return [Row(**json.loads(line)) for line in lines if line.strip()]


def render(table: list[Row]) -> str:
    """A Markdown table, as the stop note quotes it."""
    head = "| fault | calls running | completed | lost | recovery | recovered when | note |"
    lines = [head, "|---|---:|---:|---:|---:|---|---|"]
    lines += [
        f"| {r.fault} | {r.running} | {r.completed} | {r.lost} | {r.recovery_s:.1f} s "
        f"| {r.recovered} | {r.note} |"
        for r in table
    ]
    return "\n".join(lines)
