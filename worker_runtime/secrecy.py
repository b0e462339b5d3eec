"""Keeps the worker's credentials out of reach of its job processes.

Job code (possibly driven by a language model) must not be able to mint admin tokens, so once
the CLI has read them, `seal` takes `LIVEKIT_API_SECRET` and `AGENT_CONTROL_TOKEN` out of the
environment, before the fork server is exec'd with the environment of that moment; wipes them
from the memory the kernel shows as /proc/<pid>/environ and /proc/<pid>/cmdline (an
`--api-secret` value); and marks the worker process not dumpable, so that a process of the same
uid cannot read its /proc/<pid>/environ or /proc/<pid>/mem, nor ptrace it. The worker keeps the
secret in memory (`WorkerOptions.api_secret`), which is all its own token signing needs.

The range functions are pure; `seal` does the I/O. The /proc and prctl steps are Linux's and are
skipped elsewhere. It owns no option and logs nothing: its callers decide what to say.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Collection, MutableMapping
from pathlib import Path

_RangeFinder = Callable[[bytes], list[tuple[int, int]]]

SECRET_VARIABLES = ("LIVEKIT_API_SECRET", "AGENT_CONTROL_TOKEN")
"""Variables no job process may see. LIVEKIT_API_KEY stays: it is an identifier, not a
credential, and the room token every job gets names it (its `iss` claim)."""
PR_SET_DUMPABLE = 4
"""From <linux/prctl.h>."""
_STAT_ARG_START = 48
"""proc(5)'s number of /proc/<pid>/stat's arg_start field; arg_end, env_start and env_end
follow it."""


def entry_ranges(block: bytes, names: Collection[str]) -> list[tuple[int, int]]:
    """(offset, length) of each `NAME=value` entry of an environment block with a listed name."""
    wanted = {name.encode() for name in names}
    found: list[tuple[int, int]] = []
    offset = 0
    for entry in block.split(b"\0"):
        if entry.partition(b"=")[0] in wanted:
            found.append((offset, len(entry)))
        offset += len(entry) + 1
    return found


def value_ranges(block: bytes, secrets: Collection[str]) -> list[tuple[int, int]]:
    """(offset, length) of each secret in an argument block: a whole argument (`--flag VALUE`)
    or the value of `--flag=VALUE`. Never a part of another argument: a short secret must not
    wipe unrelated bytes."""
    values = {secret.encode() for secret in secrets if secret}
    found: list[tuple[int, int]] = []
    offset = 0
    for arg in block.split(b"\0"):
        # a whole argument first: a secret may itself start with "-" (`--flag -VALUE`)
        value = arg if arg in values or not arg.startswith(b"-") else arg.partition(b"=")[2]
        if value in values:
            found.append((offset + len(arg) - len(value), len(value)))
        offset += len(arg) + 1
    return found


def memory_blocks(stat: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((arg_start, arg_end), (env_start, env_end)) from the text of /proc/<pid>/stat."""
    fields = stat.rpartition(")")[2].split()  # `comm` may hold spaces and parentheses
    i = _STAT_ARG_START - 3  # fields[0] is field 3, `state`
    arg_start, arg_end, env_start, env_end = (int(v) for v in fields[i : i + 4])
    return (arg_start, arg_end), (env_start, env_end)


def withhold(environ: MutableMapping[str, str], names: Collection[str]) -> None:
    """Remove `names` from `environ` (os.environ also unsets them, for the C library)."""
    for name in names:
        environ.pop(name, None)


def seal(values: Collection[str]) -> bool:
    """Unset `SECRET_VARIABLES`, wipe them and any argument equal to one of `values` where /proc
    shows them, and make the process not dumpable; whether all of that was done (False off
    Linux).

    Call it after the options were read, before the fork server or any job process starts.
    """
    withhold(os.environ, SECRET_VARIABLES)
    if not sys.platform.startswith("linux"):
        return False
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:  # no /proc mounted: nothing shows those blocks to a job either
        stat = ""
    if stat:
        (arg_start, arg_end), (env_start, env_end) = memory_blocks(stat)
        _wipe(env_start, env_end, lambda block: entry_ranges(block, SECRET_VARIABLES))
        _wipe(arg_start, arg_end, lambda block: value_ranges(block, values))
    return _forbid_inspection()


def _wipe(start: int, end: int, ranges: _RangeFinder) -> None:
    """Overwrite the ranges `ranges` finds in this process's memory [start, end) with NULs.

    The kernel reads /proc/<pid>/environ and cmdline from these original blocks, which outlive
    unsetenv (it only drops the pointer) and Python's copies in os.environ and sys.argv.
    """
    if not 0 < start < end:
        return
    block = ctypes.string_at(start, end - start)
    for offset, length in ranges(block):
        ctypes.memset(start + offset, 0, length)


def _forbid_inspection() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<pid>/{environ,mem,fd,...} become root's, ptrace needs
    CAP_SYS_PTRACE, and no core dump is written (it would hold the secret). Job processes are
    exec'd by the fork server, which makes them dumpable again: only the worker is affected."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
