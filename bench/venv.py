"""The official worker's virtual environments: one per livekit-agents release, made once, reused.

livekit-agents never enters the project venv; each release is installed from PyPI into a venv of
its own under `${XDG_CACHE_HOME:-~/.cache}/agentworker/venvs/livekit-agents-<version>`, outside
the repository, so a fresh clone (as CI makes for every run) reuses what an earlier run made.
Owns only those venvs: where they live, creating one, installing its pin, and telling whether an
existing one is complete. `python -m bench.venv` (`make agents-venvs`) makes all TESTED_VERSIONS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

TESTED_VERSIONS = ("1.8.9", "1.6.10", "1.4.6")
"""The livekit-agents releases tested against, latest first: the latest release, then the newest
patch of the 1.6 and of the 1.4 minor line."""
AGENTS_VERSION = TESTED_VERSIONS[0]
"""The release the benchmark measures against (the one the protocol notes were read from)."""
EXTRA_REQUIREMENTS: Mapping[str, tuple[str, ...]] = {"1.4.6": ("openai<3",)}
"""Pins a release needs beyond its own metadata. 1.4.6 asks for openai>=2 and imports httpx,
which openai 3 no longer brings (it moved to httpx2): with openai 3, `import livekit.agents`
fails with ModuleNotFoundError: httpx. 1.6 bounds openai<3 itself; 1.8 uses openai 3 and httpx2."""
COMPLETE_MARKER = ".agentworker-complete"
"""File in a venv holding its requirements, written once the install's last check passed: a venv
without it was cut short (an interrupted run), and one with other requirements predates a change
of EXTRA_REQUIREMENTS (the cache outlives the clone); either is made again from nothing."""
NEUTRAL_CWD = "/"
"""Where the venv's commands run: a `python -c` or `-m` puts its cwd first on sys.path, and the
repository root (or bench/, with its venv.py) would shadow the standard library."""
INSTALL_TIMEOUT_S = 1200.0
CHECK_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 2 * INSTALL_TIMEOUT_S + 3 * CHECK_TIMEOUT_S
"""How long to wait for another process installing the same release (its steps and checks)."""


class VenvError(RuntimeError):
    """The official worker's venv could not be made; the message carries pip's last lines."""


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the venvs live: $XDG_CACHE_HOME/agentworker/venvs, or ~/.cache/agentworker/venvs.

    A relative XDG_CACHE_HOME is ignored, as the XDG base directory spec says.
    """
    base = environ.get("XDG_CACHE_HOME", "")
    cache = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return cache / "agentworker" / "venvs"


def venv_dir(version: str, root: Path | None = None) -> Path:
    """The venv of one livekit-agents release (under `cache_root()` unless `root` is given)."""
    return (cache_root() if root is None else root) / f"livekit-agents-{version}"


def requirements(version: str) -> tuple[str, ...]:
    """What pip installs into `version`'s venv: the release and the pins it needs."""
    return (f"livekit-agents=={version}", *EXTRA_REQUIREMENTS.get(version, ()))


def completed(venv: Path, version: str) -> bool:
    """Whether an install of `version` into `venv` ran to its end with today's requirements."""
    try:
        return (venv / COMPLETE_MARKER).read_text().split() == list(requirements(version))
    except OSError:
        return False


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('livekit-agents'))"
    try:
        done = subprocess.run(
            [str(python), "-c", probe],
            capture_output=True,
            text=True,
            cwd=NEUTRAL_CWD,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _import_error(python: Path) -> str | None:
    """The last lines of `import livekit.agents` failing, or None when it imports."""
    try:
        done = subprocess.run(
            [str(python), "-c", "import livekit.agents"],
            capture_output=True,
            text=True,
            cwd=NEUTRAL_CWD,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"took longer than {CHECK_TIMEOUT_S:.0f}s"
    return None if done.returncode == 0 else "\n".join(done.stderr.splitlines()[-5:])


def _run(argv: list[str], what: str, lock_fd: int) -> None:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=NEUTRAL_CWD,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
            # The child holds the lock too: a pip left running by a killed installer keeps
            # the next installer waiting instead of writing into the venv beside it.
            pass_fds=(lock_fd,),
        )
    except subprocess.TimeoutExpired:
        raise VenvError(f"{what} took longer than {INSTALL_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise VenvError(f"{what} failed (exit {done.returncode}):\n{tail}")


@contextlib.contextmanager
def _install_lock(venv: Path) -> Iterator[int]:
    """One installer per release at a time (a bench and a test run may start together)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with venv.with_name(f"{venv.name}.lock").open("a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VenvError(
                        f"{venv}: another install held its lock for {LOCK_TIMEOUT_S:.0f}s"
                    ) from None
                time.sleep(1.0)
        try:
            yield lock.fileno()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ready(venv: Path, version: str) -> bool:
    return completed(venv, version) and _installed_version(venv / "bin" / "python") == version


def _install(venv: Path, version: str, lock_fd: int) -> None:
    wanted = requirements(version)
    print(
        f"bench: installing {' '.join(wanted)} into {venv} (first run only)",
        file=sys.stderr,
        flush=True,
    )
    # The marker goes first, so a removal cut short never leaves a venv that looks complete.
    (venv / COMPLETE_MARKER).unlink(missing_ok=True)
    if venv.exists():
        shutil.rmtree(venv)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "venv", str(venv)], "creating the venv", lock_fd)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *wanted], f"pip install {' '.join(wanted)}", lock_fd)
    found = _installed_version(python)
    if found != version:
        raise VenvError(f"{venv}: expected livekit-agents {version}, found {found}")
    # Metadata alone misses a dependency the release imports but does not declare.
    error = _import_error(python)
    if error is not None:
        raise VenvError(f"{venv}: livekit-agents {version} installed but does not import:\n{error}")
    (venv / COMPLETE_MARKER).write_text("\n".join(wanted) + "\n")


def ensure_official_venv(version: str = AGENTS_VERSION, root: Path | None = None) -> Path:
    """The python of `version`'s venv with livekit-agents==version, installed on first use.

    A complete venv is reused; a half-made or outdated one (no marker, a marker naming other
    requirements, or not the release) is made again.
    """
    venv = venv_dir(version, root)
    if not _ready(venv, version):
        with _install_lock(venv) as lock_fd:
            if not _ready(venv, version):  # unless another process made it while this one waited
                _install(venv, version, lock_fd)
    return venv / "bin" / "python"


def main() -> int:
    """Make the venv of every tested release (CI runs it ahead of the tests)."""
    for version in TESTED_VERSIONS:
        try:
            python = ensure_official_venv(version)
        except VenvError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        print(f"livekit-agents {version}: {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
