"""`python -m agentworker_companion install DIR`: what the operator's init container runs.

Copies this package's source into DIR (the pod's shared emptyDir) with `sitecustomize.py` at
its root, so that the worker container, with DIR first on PYTHONPATH, loads the companion
without anything of it in its image. Only .py files are copied: the worker's interpreter
compiles them for its own version. Exit codes: 0, 1 when DIR cannot be written, 2 on usage.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from agentworker_companion import __version__

PACKAGE = Path(__file__).resolve().parent
USAGE = "usage: python -m agentworker_companion install DIR"


def install(target: Path) -> None:
    """Write the package and its sitecustomize into `target` (made if missing), atomically per
    file: a worker that starts early finds either nothing or a whole package."""
    destination = target / PACKAGE.name
    destination.mkdir(parents=True, exist_ok=True)
    for source in sorted(PACKAGE.glob("*.py")):
        if source.name == "_sitecustomize.py":
            continue
        _copy(source, destination / source.name)
    _copy(PACKAGE / "_sitecustomize.py", target / "sitecustomize.py")


def _copy(source: Path, destination: Path) -> None:
    staged = destination.with_name(f".{destination.name}.tmp")
    shutil.copyfile(source, staged)
    staged.chmod(0o644)
    staged.replace(destination)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "install":
        print(USAGE, file=sys.stderr)
        return 2
    target = Path(args[1])
    try:
        install(target)
    except OSError as error:
        print(f"agentworker-companion: cannot install into {target}: {error}", file=sys.stderr)
        return 1
    print(f"agentworker-companion {__version__} installed into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
