"""The moving parts of the load: the dialer placing calls on time, the screen showing them.

`Dialer` starts the schedule's waves of calls (the tests' `Calls`) at their times on a thread
of its own, so that the sampling loop never waits for a caller to connect; `Screen` shows the
view live on a terminal and, on anything else (a log, CI), prints a line when the fleet changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live

from hack.demo import view
from hack.demo.schedule import Wave
from tests.e2e.operator.calls import Calls


class Dialer:
    """Places the schedule's waves of calls at their times, on a thread of its own."""

    def __init__(self, phone: Calls, waves: Sequence[Wave]) -> None:
        self._phone, self._waves = phone, waves
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rooms: list[str] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="demo-dialer", daemon=True)
        self._start = 0.0

    def start(self, monotonic_t0: float) -> None:
        self._start = monotonic_t0
        self._thread.start()

    def _run(self) -> None:
        for wave in self._waves:
            if self._stop.wait(max(0.0, self._start + wave.at_s - time.monotonic())):
                return
            try:
                rooms = self._phone.start(
                    wave.count, hold_s=wave.hold_s, real=wave.count, prefix=f"demo-{wave.phase}"
                )
            except Exception as error:  # reported: the demo fails with it
                self.errors.append(
                    f"placing {wave.count} {wave.phase} calls at +{wave.at_s:.0f} s failed: "
                    f"{type(error).__name__}: {error}"
                )
                return
            with self._lock:
                self._rooms.extend(rooms)

    @property
    def rooms(self) -> list[str]:
        with self._lock:
            return list(self._rooms)

    @property
    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=60)


class Screen:
    """The live view on a terminal; on anything else, a line whenever the fleet changes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._last = ""

    def __enter__(self) -> Screen:
        if self._console.is_terminal:
            self._live = Live(console=self._console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def show(self, board: view.Board) -> None:
        if self._live is not None:
            self._live.update(view.render(board))
            return
        text = view.line(board)
        if text != self._last:
            self._console.print(f"  +{board.elapsed_s:>3.0f}s  {text}", soft_wrap=True)
            self._last = text

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
