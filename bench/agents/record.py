"""Append one line per job entry to the file named by BENCH_RECORD_FILE.

Standard library only: it is imported in job processes of both runtimes, each in its own venv.
A line is `<job metadata> <unix time of entry> <pid>`; one `os.write` of a short line to a file
opened with O_APPEND is atomic, so concurrent job processes never interleave.
"""

from __future__ import annotations

import os
import time

RECORD_FILE_ENV = "BENCH_RECORD_FILE"


def record_entry(metadata: str) -> None:
    """Write `<metadata> <time.time()> <pid>` to the record file (the entry moment first)."""
    entered_at = time.time()
    path = os.environ[RECORD_FILE_ENV]
    line = f"{metadata} {entered_at:.6f} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
