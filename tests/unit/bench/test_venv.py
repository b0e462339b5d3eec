"""bench/venv.py: where each livekit-agents release's venv lives and when one counts as made."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import venv


@pytest.mark.parametrize(
    ("environ", "root"),
    [
        ({"XDG_CACHE_HOME": "/ci/cache"}, Path("/ci/cache/agentworker/venvs")),
        ({}, Path.home() / ".cache" / "agentworker" / "venvs"),
        ({"XDG_CACHE_HOME": "relative"}, Path.home() / ".cache" / "agentworker" / "venvs"),
    ],
    ids=["xdg-cache-home", "unset", "relative-is-ignored"],
)
def test_venvs_live_in_the_user_cache_outside_the_repository(
    environ: dict[str, str], root: Path
) -> None:
    assert venv.cache_root(environ) == root


def test_each_release_has_a_venv_of_its_own(tmp_path: Path) -> None:
    dirs = {venv.venv_dir(version, tmp_path) for version in venv.TESTED_VERSIONS}
    assert venv.venv_dir("1.6.10", tmp_path) == tmp_path / "livekit-agents-1.6.10"
    assert len(dirs) == len(venv.TESTED_VERSIONS)


def test_tested_releases_are_latest_first_and_the_benchmark_measures_the_latest() -> None:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    assert list(venv.TESTED_VERSIONS) == sorted(venv.TESTED_VERSIONS, key=key, reverse=True)
    assert venv.TESTED_VERSIONS[0] == venv.AGENTS_VERSION


def test_a_venv_counts_as_made_only_once_its_marker_names_todays_requirements(
    tmp_path: Path,
) -> None:
    made = venv.venv_dir("1.4.6", tmp_path)
    (made / "bin").mkdir(parents=True)
    (made / "bin" / "python").touch()
    assert not venv.completed(made, "1.4.6"), "an install cut short leaves no marker"
    (made / venv.COMPLETE_MARKER).write_text("livekit-agents==1.4.6\n")
    assert not venv.completed(made, "1.4.6"), "made before openai<3 was pinned: made again"
    (made / venv.COMPLETE_MARKER).write_text("\n".join(venv.requirements("1.4.6")) + "\n")
    assert venv.completed(made, "1.4.6")
    assert not venv.completed(made, "1.8.9")
    assert not venv.completed(tmp_path / "absent", "1.8.9")


def test_the_release_is_pinned_exactly_and_old_ones_keep_the_openai_they_import() -> None:
    assert venv.requirements("1.8.9") == ("livekit-agents==1.8.9",)
    assert venv.requirements("1.4.6") == ("livekit-agents==1.4.6", "openai<3")
