"""Imported by the fork server alone, as its first preload: it ignores SIGTERM, as jobs do.

A SIGTERM sent to the whole process group (systemd's default, `kill -- -PGID`) must leave the
worker to drain its jobs. Should the fork server die anyway (SIGKILL, the OOM killer), the worker
follows its jobs by their own pids and starts a new fork server. It still exits when the worker
does (its pipe from the worker closes). The worker never imports this.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
