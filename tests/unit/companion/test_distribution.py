"""The `agentworker-companion` distribution (companion/pyproject.toml): one wheel for every
Python livekit-agents runs on, holding the package and the .pth at the root of site-packages,
and requiring nothing, so that installing it never changes what the user's image pinned."""

from __future__ import annotations

import email.parser
import zipfile
from pathlib import Path

import pytest

import agentworker_companion
from tests import companion_wheel

pytestmark = pytest.mark.timeout(60)  # builds a wheel with pip, on a shared machine

PACKAGE = Path(agentworker_companion.__file__).parent
PTH = "agentworker_companion.pth"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    built = companion_wheel.build(tmp_path_factory.mktemp("wheel"))
    version = agentworker_companion.__version__
    assert built.name == f"agentworker_companion-{version}-py3-none-any.whl"
    return zipfile.ZipFile(built)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    version = agentworker_companion.__version__
    return wheel.read(f"agentworker_companion-{version}.dist-info/{name}").decode()


def test_the_wheel_holds_the_package_and_the_pth_and_nothing_else(
    wheel: zipfile.ZipFile,
) -> None:
    sources = sorted(f"agentworker_companion/{p.name}" for p in PACKAGE.glob("*.py"))
    names = [n for n in wheel.namelist() if ".dist-info/" not in n]
    assert sorted(names) == sorted([*sources, PTH])
    for name in sources:
        assert wheel.read(name) == (PACKAGE.parent / name).read_bytes()
    assert wheel.read(PTH) == (companion_wheel.COMPANION_DIR / PTH).read_bytes()


def test_the_wheel_is_pure_python_for_3_9_and_later_and_requires_nothing(
    wheel: zipfile.ZipFile,
) -> None:
    metadata = email.parser.Parser().parsestr(dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "agentworker-companion"
    assert metadata["Version"] == agentworker_companion.__version__
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata.get_all("Requires-Dist") is None
    described = email.parser.Parser().parsestr(dist_info(wheel, "WHEEL"))
    assert (described["Root-Is-Purelib"], described.get_all("Tag")) == ("true", ["py3-none-any"])
