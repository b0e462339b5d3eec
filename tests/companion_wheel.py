"""The companion's own wheel for the tests: built from companion/ with pip, as
images/operator.Dockerfile builds it, and installed with pip into a Python's site-packages, as
docs/agent-image.md tells users.

Both use this venv's pip with no index: the wheel is built with the venv's hatchling (a dev
dependency) instead of an isolated build environment fetched from PyPI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COMPANION_DIR = Path(__file__).resolve().parents[1] / "companion"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
TIMEOUT_S = 120.0


def _pip(*args: str, cwd: Path) -> None:
    # `python -m` puts the working directory first on sys.path: never the repository's root,
    # whose operator/ would shadow the standard library's operator module
    done = subprocess.run(
        [*PIP, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def build(directory: Path) -> Path:
    """agentworker_companion-<version>-py3-none-any.whl, built into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    _pip(
        "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", str(directory), str(COMPANION_DIR),
        cwd=directory,
    )  # fmt: skip
    (wheel,) = directory.glob("agentworker_companion-*-py3-none-any.whl")
    return wheel


def install(wheel: Path, python: Path) -> None:
    """Install `wheel` into the environment of `python` (which needs no pip of its own)."""
    _pip(
        "--python", str(python), "install", "--no-deps", "--no-index", str(wheel),
        cwd=wheel.parent,
    )  # fmt: skip


def site_packages(python: Path) -> Path:
    """Where `python` installs pure packages and reads .pth files (its purelib)."""
    done = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return Path(done.stdout.strip())
