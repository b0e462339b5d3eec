"""What every benchmark's results say about its run (when, the command, the config, the host),
and where its results files go.

Owns those few facts, the same in every `bench/results/*.json`, so that a reader can tell how
busy the shared machine was (its load before and after) and replay the command, and the pair
of files a run leaves: `<kind>-<UTC time>.json` and `<kind>-latest.md`, whose markdown ends
with the run's failures and notes. It measures nothing; each benchmark adds its own facts and
tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def describe(
    started: datetime.datetime,
    load_before: Sequence[float],
    *,
    command: str,
    config: DataclassInstance,
) -> dict[str, object]:
    """The run's start and end (now), the command line (`command` and this process's
    arguments), the config as a dict, the CPUs, the load average before and now, and Python."""
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": utc_now().isoformat(timespec="seconds"),
        "command": " ".join([command, *sys.argv[1:]]),
        "config": dataclasses.asdict(config),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
    }


def write(
    kind: str, title: str, started: datetime.datetime, body: Mapping[str, object], markdown: str
) -> Path:
    """`results/<kind>-<started, UTC>.json` with `body` (which holds `describe`'s facts), and
    `results/<kind>-latest.md`: `title`, the command, the config and the host, `markdown`."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(body, indent=2) + "\n")
    lines = [
        f"# {title}, {body['finished_at']}",
        "",
        f"`{body['command']}`; raw samples in `{path.name}`.",
        f"Config: {json.dumps(body['config'])}. Host: {json.dumps(body['host'])}.",
        "",
        markdown,
    ]
    (RESULTS_DIR / f"{kind}-latest.md").write_text("\n".join(lines).rstrip() + "\n")
    return path


def closing_lines(failures: Sequence[str], notes: Sequence[str]) -> list[str]:
    """The markdown that ends a run's results: its failures, then its notes, as lists (none
    when there are none)."""
    lines: list[str] = []
    for title, items in (("Failures", failures), ("Notes", notes)):
        if items:
            lines += [f"{title}:", *(f"- {item}" for item in items), ""]
    return lines
