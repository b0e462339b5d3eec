"""The operator's JSON log lines, with the worker runtime's fields.

Both components write one JSON object per line with the same leading fields: `time`,
`severity` (the name Cloud Logging reads the level from), `logger`, `message`, `agentworker`
("namespace/name") and `pod` when a line is about one, `pid`, then the record's own fields. So
one query (`agentworker="shop/voice"`, `pod="voice-6f9c..."`) finds the operator's decisions
about a worker and that worker's own lines. kopf's per-object records name their object in
`k8s_ref`; this module turns that into the same two fields.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

# attributes every LogRecord has, and those kopf's per-object logger adds (never printed as is)
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_KOPF = {"k8s_ref", "k8s_skip", "settings"}


def about(key: tuple[str, str]) -> dict[str, str]:
    """The `extra` naming the AgentWorker `key` (namespace, name) a log line is about."""
    return {"agentworker": f"{key[0]}/{key[1]}"}


class AgentWorkerLog(logging.LoggerAdapter[logging.Logger]):
    """Adds `about(key)` to every line, keeping the call site's own extras (a plain
    LoggerAdapter drops them)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def _named_by_kopf(ref: object) -> dict[str, str]:
    """`agentworker` or `pod` from a kopf object reference; `object` for another kind."""
    if not isinstance(ref, Mapping):
        return {}
    kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    qualified = f"{ref['namespace']}/{name}" if ref.get("namespace") else name
    if kind == "AgentWorker":
        return {"agentworker": qualified}
    if kind == "Pod":
        return {"pod": name}
    return {"object": f"{kind} {qualified}".strip()}


class JsonFormatter(logging.Formatter):
    """time, severity, logger, message, agentworker, pod, pid, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        line: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_named_by_kopf(getattr(record, "k8s_ref", None)))
        line["pid"] = record.process
        line.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and key not in _KOPF
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
