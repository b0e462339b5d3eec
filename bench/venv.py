"""The official worker's own virtual environment: bench/.venv-agents, made once and then reused.

livekit-agents never enters the project venv; the benchmark installs the pinned release from PyPI
into a separate venv on its first run. Owns only that venv: creating it, installing the pin, and
telling whether an existing one already holds it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

AGENTS_VERSION = "1.8.9"
"""The livekit-agents release measured against (the one the protocol notes were read from)."""
VENV_DIR = Path(__file__).resolve().parent / ".venv-agents"
NEUTRAL_CWD = "/"
"""Where the venv's commands run: a `python -c` or `-m` puts its cwd first on sys.path, and the
repository root (or bench/, with its venv.py) would shadow the standard library."""
INSTALL_TIMEOUT_S = 1200.0
CHECK_TIMEOUT_S = 60.0


class VenvError(RuntimeError):
    """The official worker's venv could not be made; the message carries pip's last lines."""


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


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=NEUTRAL_CWD,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VenvError(f"{what} took longer than {INSTALL_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise VenvError(f"{what} failed (exit {done.returncode}):\n{tail}")


def ensure_official_venv(venv_dir: Path = VENV_DIR) -> Path:
    """The venv's python, with livekit-agents==AGENTS_VERSION installed (reused when present)."""
    python = venv_dir / "bin" / "python"
    if _installed_version(python) == AGENTS_VERSION:
        return python
    print(
        f"bench: installing livekit-agents=={AGENTS_VERSION} into {venv_dir} (first run only)",
        file=sys.stderr,
        flush=True,
    )
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv_dir)], "creating the venv")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(
        [*pip, f"livekit-agents=={AGENTS_VERSION}"], f"pip install livekit-agents=={AGENTS_VERSION}"
    )
    found = _installed_version(python)
    if found != AGENTS_VERSION:
        raise VenvError(f"{venv_dir}: expected livekit-agents {AGENTS_VERSION}, found {found}")
    return python
