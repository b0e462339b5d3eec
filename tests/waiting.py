"""Bounded polling for tests: wait until a check passes, or fail with the last state seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time; the message carries the last observed state."""


def wait_for(
    what: str,
    probe: Callable[[], T],
    ok: Callable[[T], bool],
    timeout_s: float = 60.0,
    interval_s: float = 0.25,
) -> T:
    """Call `probe` until `ok(result)`; return that result, or raise with the last one seen."""
    deadline = time.monotonic() + timeout_s
    last: object = "<never observed>"
    while True:
        try:
            value = probe()
            if ok(value):
                return value
            last = value
        except Exception as error:  # the last error is reported if time runs out
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last}")
        time.sleep(interval_s)


async def async_wait_for(
    what: str,
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    timeout_s: float = 60.0,
    interval_s: float = 0.25,
) -> T:
    """The asyncio twin of `wait_for`."""
    deadline = time.monotonic() + timeout_s
    last: object = "<never observed>"
    while True:
        try:
            value = await probe()
            if ok(value):
                return value
            last = value
        except Exception as error:  # the last error is reported if time runs out
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last}")
        await asyncio.sleep(interval_s)
