"""Check that every file stating the project's version states the same one (and the tag's).

pyproject.toml's `version` is the one source: the installed `agentworker` distribution carries
it, and `agent-operator --version`, `agent-worker --version`, the runtime's registration and the
operator's default companion image read it from there. A few files must state it again:

- the chart's `version` and `appVersion` (Chart.yaml); the appVersion is the default tag of
  every image the chart runs;
- the companion's `__version__`: the operator copies the package into worker images that have
  no distribution metadata to look it up in, and its own wheel (companion/pyproject.toml) takes
  its version from there;
- the published images named with a version tag (`ghcr.io/agentworker/agent-worker:X`) in the
  README, docs/, examples/, charts/ and bench/: what users copy.

`python -m hack.check_version [--tag v0.3.0]` says which of them disagree with pyproject.toml's
version, or, with --tag, with the tag's. The release workflow runs it on the pushed tag before
it builds anything, so a tag that does not match the files fails the release instead of
publishing images and a chart whose versions differ. Exit codes: 0 when all agree, 1 on a
mismatch (each one named on stderr), 2 for a malformed tag or usage. It uses the standard
library only (the workflow runs it with no project dependencies installed) and reads files
inside `--root` only.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = Path("pyproject.toml")
CHART = Path("charts/agentworker-operator/Chart.yaml")
COMPANION = Path("companion/agentworker_companion/__init__.py")
IMAGE_SOURCES = (Path("README.md"), Path("docs"), Path("examples"), Path("charts"), Path("bench"))
"""Files and folders searched for published images named with a version tag."""
SKIPPED = (Path("bench/results"),)
"""Measurements taken with earlier releases, which say what they ran."""
TEXT_SUFFIXES = frozenset({".md", ".yaml", ".yml", ".py", ".txt", ".json", ".tpl", ".Dockerfile"})

TAG = re.compile(r"v?(?P<version>(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:[-+][\w.+-]+)?)")
"""A release tag: an optional v, then a SemVer 2 version (Helm refuses any other chart version)."""
CHART_FIELD = re.compile(r"""^(?P<key>version|appVersion):\s*["']?(?P<value>[^"'\s#]+)""", re.M)
"""A top-level `version:` or `appVersion:` of Chart.yaml, quoted or not (no YAML library: see
the module docstring)."""
IMAGE_TAG = re.compile(
    r"ghcr\.io/agentworker/(?P<image>agent-[a-z-]+):(?P<tag>[0-9](?:[\w.-]*\w)?)"
)
"""A published image with a version tag (not the full stop of a sentence after it);
`<version>` and other placeholders do not match."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One place that states a version."""

    where: str
    """The file (relative to the root) and what in it, e.g. `Chart.yaml appVersion`."""
    version: str
    """The version it states; empty when the place is missing or unreadable."""


def pyproject_version(text: str) -> str:
    """`[project] version` of a pyproject.toml; empty when it has none (a dynamic version)."""
    project = tomllib.loads(text).get("project", {})
    version = project.get("version", "") if isinstance(project, dict) else ""
    return version if isinstance(version, str) else ""


def chart_fields(text: str) -> dict[str, str]:
    """`version` and `appVersion` of a Chart.yaml, those it has."""
    return {match["key"]: match["value"] for match in CHART_FIELD.finditer(text)}


def module_version(text: str) -> str:
    """The string a Python module assigns to `__version__` at its top level, or empty."""
    for node in ast.parse(text).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return ""


def image_tags(text: str) -> list[tuple[str, str]]:
    """The (image, tag) of each published image named with a version tag in `text`."""
    return [(match["image"], match["tag"]) for match in IMAGE_TAG.finditer(text)]


def tag_version(tag: str) -> str:
    """The version of a release tag (v0.3.0 -> 0.3.0); ValueError when it is not one."""
    match = TAG.fullmatch(tag)
    if match is None:
        raise ValueError(f"--tag {tag!r} is not a release tag like v0.3.0 (a SemVer version)")
    return match["version"]


def mismatches(statements: Sequence[Statement], want: str) -> list[Statement]:
    """The statements that do not say `want`."""
    return [s for s in statements if s.version != want]


def _read(root: Path, path: Path) -> str:
    file = root / path
    return file.read_text(encoding="utf-8") if file.is_file() else ""


def _text_files(root: Path) -> Iterator[Path]:
    for source in IMAGE_SOURCES:
        top = root / source
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            relative = path.relative_to(root)
            if any(relative.is_relative_to(skipped) for skipped in SKIPPED):
                continue
            if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "Dockerfile"):
                yield relative


def read_statements(root: Path) -> list[Statement]:
    """Every place under `root` that states the project's version, pyproject.toml's first."""
    chart = chart_fields(_read(root, CHART))
    statements = [
        Statement(where=f"{PYPROJECT} version", version=pyproject_version(_read(root, PYPROJECT))),
        Statement(where=f"{CHART} version", version=chart.get("version", "")),
        Statement(where=f"{CHART} appVersion", version=chart.get("appVersion", "")),
        Statement(where=f"{COMPANION} __version__", version=module_version(_read(root, COMPANION))),
    ]
    for path in _text_files(root):
        statements.extend(
            Statement(where=f"{path} {image}", version=tag)
            for image, tag in image_tags(_read(root, path))
        )
    return statements


def verdict(statements: Sequence[Statement], want: str, source: str) -> tuple[bool, str]:
    """Whether every statement says `want` (the version of `source`), and a message saying so
    or naming each one that does not."""
    wrong = mismatches(statements, want)
    if not wrong:
        return True, f"check_version: all {len(statements)} places state {want}"
    lines = [
        f"check_version: {len(wrong)} of {len(statements)} places do not state {want}, "
        f"the version of {source}:",
        *(f"  {s.where}: {s.version or '(missing)'}" for s in wrong),
    ]
    return False, "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.check_version",
        description="Check that pyproject.toml, the chart's version and appVersion, the "
        "companion and the published images named in the docs state one version.",
    )
    parser.add_argument("--tag", help="a release tag (v0.3.0): every place must state its version")
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="the checkout to check (default: this one)"
    )
    args = parser.parse_args(argv)
    statements = read_statements(args.root)
    if args.tag is None:
        want, source = statements[0].version, str(PYPROJECT)
        if not want:
            print(f"check_version: {PYPROJECT} states no [project] version", file=sys.stderr)
            return 1
    else:
        try:
            want, source = tag_version(args.tag), f"the tag {args.tag}"
        except ValueError as error:
            parser.error(str(error))
    agree, message = verdict(statements, want, source)
    print(message, file=sys.stdout if agree else sys.stderr)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
