"""Imported by the fork server alone, as its first preload: it ignores SIGTERM, as jobs do.

A SIGTERM sent to the whole process group (systemd's default, `kill -- -PGID`) must leave the
worker to drain its jobs. The fork server reports each job's exit to the worker; were it to die,
the worker would take running jobs for ended and could no longer kill one that hangs. It still
exits when the worker does (its pipe from the worker closes). The worker never imports this.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
