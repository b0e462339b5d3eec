"""Reading untrusted JSON objects field by field, with errors that name the field's path.

This module owns the mechanics of parsing (types, ranges, enums, Go-style durations, deep JSON
copies) and `InvalidSpecError`, whose message names the field, the value and what would be right.
It knows no AgentWorker field (that is `spec`), does no I/O and imports no kopf, kubernetes,
aiohttp or prometheus_client.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import TypeAlias, TypeVar

JSON: TypeAlias = "str | int | float | bool | list[JSON] | dict[str, JSON] | None"
"""A value passed through unchanged (affinity, tolerations, env sources)."""

_DURATION = re.compile(r"(?:[0-9]+(?:ms|h|m|s))+")
_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 24 * 3600.0
_PERCENT = re.compile(r"([0-9]{1,3})%")
_E = TypeVar("_E", bound=enum.StrEnum)


class InvalidSpecError(ValueError):
    """The spec cannot be turned into workers; the message names field, value and the fix."""

    def __init__(self, path: str, value: object, expected: str) -> None:
        self.path = path
        self.value = value
        self.expected = expected
        super().__init__(f"{path}: {_show(value)} {expected}")


def _show(value: object) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_duration_s(text: str) -> float | None:
    """Seconds in a Go-style duration such as `30m` or `1h30m`, or None if it is not one."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _DURATION_UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))


class FieldReader:
    """Reads one mapping of the raw spec, naming the path of every field in its errors."""

    def __init__(self, raw: object, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidSpecError(path, raw, "is not an object")
        self.raw: Mapping[object, object] = raw
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str) -> object:
        return self.raw.get(key)

    def child(self, key: str) -> FieldReader:
        return FieldReader(self.raw.get(key), self.at(key))

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        pattern: re.Pattern[str] | None = None,
        expected: str = "is not a string",
    ) -> str:
        value = self.raw.get(key, default)
        if value is None:
            raise InvalidSpecError(self.at(key), value, "is not set but is required")
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise InvalidSpecError(self.at(key), value, expected)
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value is None else self.string(key)

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidSpecError(self.at(key), value, f"is not an integer in [{low}, {high}]")
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.raw.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise InvalidSpecError(self.at(key), value, f"is not a number in [{low:g}, {high:g}]")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise InvalidSpecError(self.at(key), value, "is not true or false")
        return value

    def duration_s(
        self,
        key: str,
        default: str,
        *,
        high_s: float = MAX_DURATION_S,
        low_s: float = 0.0,
        too_short: str = "",
    ) -> float:
        """A duration in seconds, at most high_s and at least low_s (`too_short` says why)."""
        text = self.raw.get(key, default)
        seconds = parse_duration_s(text) if isinstance(text, str) else None
        if seconds is None:
            raise InvalidSpecError(self.at(key), text, "is not a duration like 30m")
        if seconds > high_s:
            raise InvalidSpecError(self.at(key), text, f"is longer than {high_s:g}s")
        if seconds < low_s:
            raise InvalidSpecError(self.at(key), text, f"is shorter than {low_s:g}s: {too_short}")
        return seconds

    def choice(self, key: str, kind: type[_E], default: _E) -> _E:
        value = self.raw.get(key, default.value)
        allowed = [member.value for member in kind]
        if value not in allowed:
            raise InvalidSpecError(self.at(key), value, f"is not one of {', '.join(allowed)}")
        return kind(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise InvalidSpecError(self.at(key), value, "is not a map of strings to strings")
        return dict(value)

    def json_object(self, key: str) -> dict[str, JSON]:
        value = self.raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise InvalidSpecError(self.at(key), value, "is not an object")
        return as_json(value, self.at(key))  # type: ignore[return-value]  # a Mapping stays a dict

    def json_list(self, key: str) -> list[JSON]:
        value = self.raw.get(key) or []
        if not isinstance(value, list):
            raise InvalidSpecError(self.at(key), value, "is not a list")
        return [as_json(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def objects(self, key: str, *, required: tuple[str, ...] = ()) -> tuple[dict[str, JSON], ...]:
        """A list of Kubernetes objects passed through, each an object with `required` set."""
        found: list[dict[str, JSON]] = []
        for i, item in enumerate(self.json_list(key)):
            if not isinstance(item, dict):
                raise InvalidSpecError(f"{self.at(key)}[{i}]", item, "is not an object")
            for name in required:
                if item.get(name) in (None, ""):
                    raise InvalidSpecError(
                        f"{self.at(key)}[{i}].{name}", item.get(name), "is required"
                    )
            found.append(item)
        return tuple(found)

    def int_or_percent(self, key: str, default: int | str, *, low: int, high: int) -> int | str:
        """Kubernetes' IntOrString as a count in [low, high] or a percentage in [low%, 100%]."""
        value = self.raw.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        if isinstance(value, str):
            match = _PERCENT.fullmatch(value)
            if match is not None and low <= int(match.group(1)) <= 100:
                return value
        raise InvalidSpecError(
            self.at(key),
            value,
            f"is not a number in [{low}, {high}] nor a percentage in [{low}%, 100%] like 25%",
        )


def as_json(value: object, path: str) -> JSON:
    """A deep copy of plain JSON data; anything else is an error naming where it is."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [as_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {str(k): as_json(v, f"{path}.{k}") for k, v in value.items()}
    raise InvalidSpecError(path, value, "is not JSON data")
