"""hack/check_version.py: one version in pyproject.toml, the chart, the companion and the docs."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hack import check_version

REPO_ROOT = check_version.REPO_ROOT
CHART = REPO_ROOT / check_version.CHART


def repository_version() -> str:
    return check_version.pyproject_version((REPO_ROOT / "pyproject.toml").read_text())


def copy_checkout(target: Path) -> Path:
    """The files the checker reads, copied from this checkout (of the docs, examples/ only)."""
    for path in (check_version.PYPROJECT, check_version.CHART, check_version.COMPANION):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / path, target / path)
    shutil.copytree(REPO_ROOT / "examples", target / "examples")
    return target


def test_the_repository_states_one_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_version.main([]) == 0
    assert f"state {repository_version()}" in capsys.readouterr().out


def test_the_repository_matches_a_tag_of_its_own_version() -> None:
    assert check_version.main(["--tag", f"v{repository_version()}"]) == 0


def test_a_chart_app_version_that_differs_fails_naming_the_file_and_both_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_checkout(tmp_path)
    chart = root / check_version.CHART
    chart.write_text(
        re.sub(r"^appVersion: .*$", 'appVersion: "0.0.9"', chart.read_text(), flags=re.M)
    )
    assert check_version.main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"do not state {repository_version()}, the version of pyproject.toml" in err
    assert "charts/agentworker-operator/Chart.yaml appVersion: 0.0.9" in err
    assert "Chart.yaml version:" not in err, "only the place that differs is named"


def test_a_tag_that_differs_from_the_files_fails_naming_each_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_checkout(tmp_path)
    assert check_version.main(["--root", str(root), "--tag", "v99.0.0"]) == 1
    err = capsys.readouterr().err
    assert "do not state 99.0.0, the version of the tag v99.0.0" in err
    for place in ("pyproject.toml version", "Chart.yaml version", "Chart.yaml appVersion",
                  "__init__.py __version__", "examples/agentworker.yaml agent-worker"):  # fmt: skip
        assert f"{place}: {repository_version()}" in err, place


def test_a_missing_companion_version_is_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_checkout(tmp_path)
    (root / check_version.COMPANION).write_text('"""No version here."""\n')
    assert check_version.main(["--root", str(root)]) == 1
    assert "agentworker_companion/__init__.py __version__: (missing)" in capsys.readouterr().err


@pytest.mark.parametrize("tag", ["0.3", "v0.3.0.1", "release-0.3.0", "v01.2.3", ""])
def test_a_tag_that_is_not_a_release_version_is_a_usage_error(
    tag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        check_version.main(["--tag", tag])
    assert exited.value.code == 2
    assert "is not a release tag like v0.3.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tag", "version"),
    [("v0.3.0", "0.3.0"), ("0.3.0", "0.3.0"), ("v1.0.0-rc.1", "1.0.0-rc.1"),
     ("v2.10.3+build.7", "2.10.3+build.7")],
    ids=["v-prefix", "bare", "pre-release", "build-metadata"],
)  # fmt: skip
def test_a_release_tag_gives_its_semver_version(tag: str, version: str) -> None:
    assert check_version.tag_version(tag) == version


def test_chart_fields_are_read_quoted_or_not_at_the_top_level_only() -> None:
    text = (
        "apiVersion: v2\nversion: 1.2.3 # the chart\nappVersion: '1.2.3'\n"
        "dependencies:\n  - name: x\n    version: 9.9.9\n"
    )
    assert check_version.chart_fields(text) == {"version": "1.2.3", "appVersion": "1.2.3"}


def test_the_module_version_is_the_top_level_string_assignment() -> None:
    text = '"""Doc."""\n# a comment\n__version__ = "1.2.3"\ndef f():\n    __version__ = "0"\n'
    assert check_version.module_version(text) == "1.2.3"
    assert check_version.module_version("__version__ = get()\n") == ""


def test_image_tags_are_versions_not_placeholders() -> None:
    text = (
        "image: ghcr.io/agentworker/agent-worker:0.3.0\n"
        "Build FROM ghcr.io/agentworker/agent-worker:1.0.0-rc.1.\n"
        "FROM ghcr.io/agentworker/agent-operator:<version>\n"
        "default ghcr.io/agentworker/agent-operator:<appVersion>, "
        "or ghcr.io/acme/agent-worker:1.0.0\n"
    )
    assert check_version.image_tags(text) == [
        ("agent-worker", "0.3.0"),
        ("agent-worker", "1.0.0-rc.1"),
    ]


def test_a_dynamic_pyproject_version_reads_as_none() -> None:
    assert check_version.pyproject_version('[project]\nname = "x"\ndynamic = ["version"]\n') == ""


def test_it_imports_the_standard_library_alone() -> None:
    """The release workflow runs it on a bare runner, with no project dependency installed."""
    tree = ast.parse(Path(check_version.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    outside = {name for name in imported if name.partition(".")[0] not in sys.stdlib_module_names}
    assert not outside, outside


@pytest.mark.timeout(30)  # starts a Python interpreter, on a machine shared with other tests
def test_the_release_workflows_command_passes_on_this_checkout() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hack.check_version", "--tag", f"v{repository_version()}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert f"state {repository_version()}" in done.stdout
