"""The CPU count behind the default load: the request, NUM_CPUS, the cgroup quota, in that order."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from worker_runtime.cpu import (
    CpuOverride,
    available_cpus,
    parse_cfs_quota,
    parse_cpu_max,
    parse_cpu_override,
)

pytestmark = pytest.mark.timeout(2)

REQUEST = "AGENT_CPU_REQUEST_MILLICORES"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, CpuOverride(cpus=None, source=None)),
        ({REQUEST: "500"}, CpuOverride(cpus=0.5, source=REQUEST)),
        ({REQUEST: "2000"}, CpuOverride(cpus=2.0, source=REQUEST)),
        ({REQUEST: " 250\n"}, CpuOverride(cpus=0.25, source=REQUEST)),
        ({REQUEST: "1500", "NUM_CPUS": "8"}, CpuOverride(cpus=1.5, source=REQUEST)),
        ({"NUM_CPUS": "4"}, CpuOverride(cpus=4.0, source="NUM_CPUS")),
        ({"NUM_CPUS": "1.5"}, CpuOverride(cpus=1.5, source="NUM_CPUS")),
        ({REQUEST: "0", "NUM_CPUS": "3"}, CpuOverride(cpus=3.0, source="NUM_CPUS")),
        ({REQUEST: "0"}, CpuOverride(cpus=None, source=None)),
        ({REQUEST: "", "NUM_CPUS": ""}, CpuOverride(cpus=None, source=None)),
        (
            {REQUEST: "500m", "NUM_CPUS": "2"},
            CpuOverride(cpus=2.0, source="NUM_CPUS", rejected=((REQUEST, "500m"),)),
        ),
        (
            {REQUEST: "-100"},
            CpuOverride(cpus=None, source=None, rejected=((REQUEST, "-100"),)),
        ),
        (
            {REQUEST: "0.5"},
            CpuOverride(cpus=None, source=None, rejected=((REQUEST, "0.5"),)),
        ),
        (
            {"NUM_CPUS": "four"},
            CpuOverride(cpus=None, source=None, rejected=(("NUM_CPUS", "four"),)),
        ),
        (
            {"NUM_CPUS": "0"},
            CpuOverride(cpus=None, source=None, rejected=(("NUM_CPUS", "0"),)),
        ),
        (
            {"NUM_CPUS": "-2"},
            CpuOverride(cpus=None, source=None, rejected=(("NUM_CPUS", "-2"),)),
        ),
        (
            {"NUM_CPUS": "nan"},
            CpuOverride(cpus=None, source=None, rejected=(("NUM_CPUS", "nan"),)),
        ),
        (
            {"NUM_CPUS": "inf"},
            CpuOverride(cpus=None, source=None, rejected=(("NUM_CPUS", "inf"),)),
        ),
        (
            {REQUEST: "lots", "NUM_CPUS": "none"},
            CpuOverride(cpus=None, source=None, rejected=((REQUEST, "lots"), ("NUM_CPUS", "none"))),
        ),
    ],
    ids=[
        "nothing-set",
        "request-millicores",
        "request-whole-cpus",
        "request-with-whitespace",
        "request-wins-over-num-cpus",
        "num-cpus-whole",
        "num-cpus-fraction",
        "request-zero-means-no-request",
        "request-zero-alone-is-not-an-error",
        "empty-means-unset",
        "request-with-unit-rejected-num-cpus-used",
        "request-negative-rejected",
        "request-fraction-rejected",
        "num-cpus-word-rejected",
        "num-cpus-zero-rejected",
        "num-cpus-negative-rejected",
        "num-cpus-nan-rejected",
        "num-cpus-inf-rejected",
        "both-malformed-both-rejected",
    ],
)
def test_parse_cpu_override(env: dict[str, str], expected: CpuOverride) -> None:
    assert parse_cpu_override(env) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200000 100000\n", 2.0),
        ("50000 100000", 0.5),
        ("500 100000", 0.01),
        ("max 100000\n", None),
        ("", None),
        ("garbage", None),
        ("abc 100000", None),
        ("100000 0", None),
    ],
    ids=[
        "two-cpus",
        "half-cpu",
        "floor-at-a-hundredth",
        "no-quota",
        "empty",
        "one-field",
        "not-a-number",
        "zero-period",
    ],
)
def test_parse_cpu_max(text: str, expected: float | None) -> None:
    assert parse_cpu_max(text) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        ("150000\n", "100000\n", 1.5),
        ("-1\n", "100000\n", None),
        ("0", "100000", None),
        ("x", "100000", None),
    ],
    ids=["one-and-a-half-cpus", "no-quota", "zero-quota", "not-a-number"],
)
def test_parse_cfs_quota(quota: str, period: str, expected: float | None) -> None:
    assert parse_cfs_quota(quota, period) == expected


def _cgroup_v2(root: Path, cpu_max: str) -> Path:
    (root / "cpu.max").write_text(cpu_max)
    return root


def _cgroup_v1(root: Path, quota: str, period: str) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (root / "cpu" / "cpu.cfs_period_us").write_text(period)
    return root


def _machine_cpus() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:
        return float(os.cpu_count() or 1)


def test_request_wins_over_the_cgroup_quota(tmp_path: Path) -> None:
    root = _cgroup_v2(tmp_path, "400000 100000\n")
    assert available_cpus({REQUEST: "750", "NUM_CPUS": "3"}, root) == 0.75


def test_num_cpus_wins_over_the_cgroup_quota(tmp_path: Path) -> None:
    root = _cgroup_v2(tmp_path, "400000 100000\n")
    assert available_cpus({"NUM_CPUS": "3"}, root) == 3.0


def test_cgroup_v2_quota_without_an_override(tmp_path: Path) -> None:
    assert available_cpus({}, _cgroup_v2(tmp_path, "250000 100000\n")) == 2.5


def test_cgroup_v1_quota_when_v2_has_none(tmp_path: Path) -> None:
    root = _cgroup_v1(_cgroup_v2(tmp_path, "max 100000\n"), "50000\n", "100000\n")
    assert available_cpus({}, root) == 0.5


def test_no_quota_falls_back_to_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    root = _cgroup_v1(_cgroup_v2(tmp_path, "max 100000\n"), "-1\n", "100000\n")
    assert available_cpus({}, root) == _machine_cpus()


def test_no_cgroup_files_falls_back_to_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    assert available_cpus({}, tmp_path / "missing") == _machine_cpus()


def test_malformed_override_is_ignored_and_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = f"lots-{uuid.uuid4().hex}"  # unique: the warn-once memory lives for the process
    root = _cgroup_v2(tmp_path, "300000 100000\n")
    with caplog.at_level(logging.WARNING, logger="worker_runtime.cpu"):
        first = available_cpus({"NUM_CPUS": bad}, root)
        second = available_cpus({"NUM_CPUS": bad}, root)
    assert (first, second) == (3.0, 3.0)
    [record] = caplog.records
    assert record.getMessage() == "ignoring a malformed CPU count override"
    assert (record.__dict__["variable"], record.__dict__["value"]) == ("NUM_CPUS", bad)


def test_each_malformed_value_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = uuid.uuid4().hex
    with caplog.at_level(logging.WARNING, logger="worker_runtime.cpu"):
        available_cpus({REQUEST: f"{token}m"}, tmp_path)
        available_cpus({REQUEST: f"-{token}"}, tmp_path)
    assert [r.__dict__["value"] for r in caplog.records] == [f"{token}m", f"-{token}"]
