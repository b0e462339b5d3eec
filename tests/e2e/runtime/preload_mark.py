"""Imported only through `preload_modules`: appends the importing pid to $E2E_PRELOAD_MARK.

A test reads the file to see which process imported it, and how often.
"""

from __future__ import annotations

import os

_mark = os.environ.get("E2E_PRELOAD_MARK")
if _mark:
    with open(_mark, "a") as f:
        f.write(f"{os.getpid()}\n")
