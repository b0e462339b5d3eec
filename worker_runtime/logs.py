"""Log output: one JSON object per line (`start`) or readable coloured lines (`dev`).

Owns the formatters and `configure`, used by the worker and by every job process. It must not
log secrets: it prints only a record's message and its `extra` values, and callers never put a
secret there. Imports nothing heavier than the standard library.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

LogFormat = Literal["json", "dev"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_COLOURS = {"DEBUG": "36", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "35"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


# Set by the operator on its worker pods: "namespace/name" of the AgentWorker, and the pod's name
AGENTWORKER_ENV = "AGENT_AGENTWORKER"
POD_NAME_ENV = "AGENT_POD_NAME"


def _identity(environ: Mapping[str, str]) -> dict[str, str]:
    """The `agentworker` and `pod` fields from the environment, when it names them."""
    found = {"agentworker": environ.get(AGENTWORKER_ENV, ""), "pod": environ.get(POD_NAME_ENV, "")}
    return {field: value for field, value in found.items() if value}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the operator's fields: time, severity (Cloud Logging's name
    for the level), logger, message, agentworker and pod (when the pod was made by the
    operator), pid, then the record's extras."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._identity = _identity(os.environ if environ is None else environ)

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        line: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._identity,
            "pid": record.process,
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class DevFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL logger message key=value ...`, coloured by level."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        colour = _COLOURS.get(record.levelname, "0")
        pairs = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        text = (
            f"{when:%H:%M:%S} \x1b[{colour}m{record.levelname:<7}\x1b[0m "
            f"{record.name} {record.getMessage()} {pairs}"
        ).rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(fmt: LogFormat, level: str) -> None:
    """Send the root logger to stderr in `fmt` at `level`, replacing any earlier handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else DevFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class WorkerLog(logging.LoggerAdapter[logging.Logger]):
    """Adds the worker's agent_name and worker_id to every line (call-site extras win)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
