"""Companion: the plan a pod template is built from, the verdict on the pods told to load it
(injected or installed), the fallback recorded in the status, and the Companion condition's
words. Pure."""

from __future__ import annotations

from typing import Any

import pytest

import agentworker_companion
from agentworker_operator import companion, kubelet
from agentworker_operator.companion import Fallback, Mode, Plan, Seen

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

IMAGE = "ghcr.io/acme/agent:1"
FALLBACK = Fallback(
    image=IMAGE, mode=Mode.INJECT, reason="NotLoaded", message="the worker on p did not load it"
)
INSTALLED_FALLBACK = Fallback(
    image=IMAGE, mode=Mode.INSTALLED, reason="NotLoaded", message="the image lacks it"
)


@pytest.mark.parametrize(
    ("entrypoint", "mode", "fallback", "expected"),
    [
        (True, Mode.INJECT, None, Plan.RUNTIME),
        (True, Mode.DISABLED, FALLBACK, Plan.RUNTIME),
        (False, Mode.INJECT, None, Plan.INJECT),
        (False, Mode.INJECT, FALLBACK, Plan.FALLBACK),
        (
            False,
            Mode.INJECT,
            Fallback(image="ghcr.io/acme/agent:0", mode=Mode.INJECT, reason="r", message=""),
            Plan.INJECT,
        ),
        (False, Mode.INSTALLED, None, Plan.INSTALLED),
        (False, Mode.INSTALLED, INSTALLED_FALLBACK, Plan.FALLBACK),
        (False, Mode.INSTALLED, FALLBACK, Plan.INSTALLED),
        (False, Mode.INJECT, INSTALLED_FALLBACK, Plan.INJECT),
        (False, Mode.DISABLED, None, Plan.OFF),
        (False, Mode.DISABLED, FALLBACK, Plan.OFF),
    ],
    ids=[
        "this-runtime",
        "this-runtime-whatever-the-mode",
        "inject",
        "inject-fell-back-on-this-image",
        "inject-again-on-a-new-image",
        "installed",
        "installed-fell-back-on-this-image",
        "installed-tried-after-inject-fell-back",
        "inject-tried-after-installed-fell-back",
        "off",
        "off-whatever-was-found",
    ],
)
def test_plan(entrypoint: bool, mode: Mode, fallback: Fallback | None, expected: Plan) -> None:
    assert companion.plan(entrypoint=entrypoint, mode=mode, image=IMAGE, fallback=fallback) is (
        expected
    )


@pytest.mark.parametrize(
    ("plan", "serves"),
    [
        (Plan.RUNTIME, True),
        (Plan.INJECT, True),
        (Plan.INSTALLED, True),
        (Plan.OFF, False),
        (Plan.FALLBACK, False),
    ],
)
def test_only_a_worker_with_the_runtime_or_the_companion_serves_the_contract(
    plan: Plan, serves: bool
) -> None:
    assert plan.serves_contract is serves


@pytest.mark.parametrize(
    ("plan", "loads"),
    [
        (Plan.RUNTIME, False),
        (Plan.INJECT, True),
        (Plan.INSTALLED, True),
        (Plan.OFF, False),
        (Plan.FALLBACK, False),
    ],
)
def test_only_injected_and_installed_pods_are_told_to_load_the_companion(
    plan: Plan, loads: bool
) -> None:
    assert plan.loads_companion is loads


def test_the_operator_and_the_companion_agree_on_its_lines_and_variable() -> None:
    lines = tuple(f"{major}.{minor}" for major, minor in agentworker_companion.TESTED_LINES)
    assert lines == companion.TESTED_LINES
    assert companion.ENABLE_VARIABLE == agentworker_companion.ENABLE_VARIABLE


# -- the verdict -------------------------------------------------------------------------------


def pod(name: str = "support-1", *, init_waiting: str = "", container: str = "") -> dict[str, Any]:
    statuses = []
    if init_waiting:
        statuses.append(
            {
                "name": container or companion.INIT_CONTAINER,
                "state": {"waiting": {"reason": init_waiting}},
            }
        )
    return {"metadata": {"name": name}, "status": {"initContainerStatuses": statuses}}


def loaded(name: str = "support-1") -> Seen:
    return Seen(pod=pod(name), answered=True, companion="0.1.0", sdk_version="1.8.9")


def test_no_pod_yet_is_no_verdict() -> None:
    assert companion.verdict(IMAGE, Mode.INJECT, []) is None


def test_workers_that_loaded_it_or_did_not_answer_yet_are_no_verdict() -> None:
    seen = [loaded("a"), Seen(pod=pod("b"), answered=False), loaded("c")]
    assert companion.verdict(IMAGE, Mode.INJECT, seen) is None


def test_a_worker_that_answers_worker_with_an_http_error_did_not_load_it() -> None:
    # the companion serves /worker as soon as it listens: a 404 there is another server
    refusing = Seen(pod=pod("b"), answered=False, refused="HTTP 404")
    found = companion.verdict(IMAGE, Mode.INJECT, [loaded("a"), refusing])
    assert found is not None
    assert (found.image, found.reason) == (IMAGE, "NotLoaded")
    assert found.message.startswith("the worker on b answers /worker with HTTP 404")


def test_a_worker_that_gave_no_http_answer_yet_is_no_verdict() -> None:
    assert (
        companion.verdict(IMAGE, Mode.INJECT, [Seen(pod=pod("b"), answered=False, refused="")])
        is None
    )


@pytest.mark.parametrize("reason", sorted(kubelet.STUCK_REASONS))
def test_an_init_container_that_cannot_run_is_a_fallback_naming_the_pod(reason: str) -> None:
    found = companion.verdict(
        IMAGE, Mode.INJECT, [Seen(pod=pod(init_waiting=reason), answered=False)]
    )
    assert found is not None
    assert (found.image, found.reason) == (IMAGE, "InitContainerFailed")
    assert found.message.startswith(f"the companion's init container on support-1 is {reason} ")
    assert "--companion-image" in found.message


@pytest.mark.parametrize(
    ("waiting", "container"),
    [("PodInitializing", ""), ("ContainerCreating", ""), ("CrashLoopBackOff", "users-init")],
    ids=["still-starting", "being-created", "another-init-container"],
)
def test_an_init_container_on_its_way_or_the_users_own_is_no_verdict(
    waiting: str, container: str
) -> None:
    seen = Seen(pod=pod(init_waiting=waiting, container=container), answered=False)
    assert companion.verdict(IMAGE, Mode.INJECT, [seen]) is None


def test_a_pod_without_status_is_no_verdict() -> None:
    assert companion.verdict(IMAGE, Mode.INJECT, [Seen(pod={}, answered=False)]) is None


@pytest.mark.parametrize(
    ("sdk_version", "project_type", "reason", "said"),
    [
        ("1.0.0", "node", "NotPython", "the worker on support-1 is a node worker"),
        ("1.2.3", "python", "UnsupportedVersion", "runs livekit-agents 1.2.3, outside"),
        ("1.10.0", "", "UnsupportedVersion", "runs livekit-agents 1.10.0, outside"),
        ("", "", "UnsupportedVersion", "runs livekit-agents (unknown), outside"),
        ("1.8.9", "python", "NotLoaded", "(livekit-agents 1.8.9) did not load the companion"),
        ("1.4.0", "", "NotLoaded", "(livekit-agents 1.4.0) did not load the companion"),
    ],
    ids=["node", "old-line", "not-1.1", "no-version", "tested-line", "no-project-type"],
)
def test_a_worker_answering_livekit_agents_own_document_says_why(
    sdk_version: str, project_type: str, reason: str, said: str
) -> None:
    seen = Seen(pod=pod(), answered=True, sdk_version=sdk_version, project_type=project_type)
    found = companion.verdict(IMAGE, Mode.INJECT, [seen])
    assert found is not None
    assert (found.image, found.reason) == (IMAGE, reason)
    assert said in found.message


def test_not_loaded_points_at_pythonpath() -> None:
    found = companion.verdict(
        IMAGE, Mode.INJECT, [Seen(pod=pod(), answered=True, sdk_version="1.6.2")]
    )
    assert found is not None
    assert f"PYTHONPATH ({companion.MOUNT_PATH})" in found.message


def test_a_fallback_remembers_the_mode_it_was_found_in() -> None:
    seen = [Seen(pod=pod(), answered=True, sdk_version="1.2.0")]
    for mode in (Mode.INJECT, Mode.INSTALLED):
        found = companion.verdict(IMAGE, mode, seen)
        assert found is not None
        assert found.mode is mode


def test_installed_but_not_loaded_says_the_image_lacks_the_package() -> None:
    seen = Seen(pod=pod(), answered=True, sdk_version="1.8.9", project_type="python")
    found = companion.verdict(IMAGE, Mode.INSTALLED, [seen])
    assert found is not None
    assert (found.reason, found.mode) == ("NotLoaded", Mode.INSTALLED)
    assert found.message == (
        "the worker on support-1 (livekit-agents 1.8.9) did not load the companion: the image "
        "lacks the agentworker-companion package in the site-packages of the Python that runs "
        "the worker (pip install it there: docs/agent-image.md)"
    )
    assert "PYTHONPATH" not in found.message


def test_installed_and_another_server_on_the_port_says_the_image_lacks_the_package() -> None:
    refusing = Seen(pod=pod("b"), answered=False, refused="HTTP 404")
    found = companion.verdict(IMAGE, Mode.INSTALLED, [refusing])
    assert found is not None
    assert found.message == (
        "the worker on b answers /worker with HTTP 404: the companion does not serve its port "
        "(the image lacks the agentworker-companion package, or it is not a livekit-agents "
        "worker)"
    )


def test_one_worker_without_it_is_enough_for_a_verdict() -> None:
    without = Seen(pod=pod("b"), answered=True, sdk_version="1.8.9", project_type="python")
    found = companion.verdict(IMAGE, Mode.INJECT, [loaded("a"), without, loaded("c")])
    assert found is not None
    assert (found.reason, "on b " in found.message) == ("NotLoaded", True)


# -- the record in the status and the condition -------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "mode", "expected"),
    [
        (Plan.RUNTIME, Mode.INJECT, None),
        (Plan.INJECT, Mode.INJECT, {"mode": "Inject", "state": "Injected"}),
        (Plan.INSTALLED, Mode.INSTALLED, {"mode": "Installed", "state": "Installed"}),
        (Plan.OFF, Mode.DISABLED, {"mode": "Disabled", "state": "Disabled"}),
    ],
    ids=["this-runtime-needs-none", "injected", "installed", "off"],
)
def test_status_record(plan: Plan, mode: Mode, expected: dict[str, str] | None) -> None:
    assert companion.status_record(plan, None, mode) == expected


def test_a_fallback_is_recorded_with_its_image_and_read_back() -> None:
    record = companion.status_record(Plan.FALLBACK, FALLBACK, Mode.INJECT)
    assert record == {
        "mode": "Inject",
        "state": "Fallback",
        "image": IMAGE,
        "reason": "NotLoaded",
        "message": "the worker on p did not load it",
    }
    assert companion.recorded_fallback({"companion": record}) == FALLBACK


def test_an_installed_fallback_is_read_back_with_its_mode() -> None:
    record = companion.status_record(Plan.FALLBACK, INSTALLED_FALLBACK, Mode.INSTALLED)
    assert record is not None
    assert record["mode"] == "Installed"
    assert companion.recorded_fallback({"companion": record}) == INSTALLED_FALLBACK


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"companion": None},
        {"companion": "Fallback"},
        {"companion": {"mode": "Inject", "state": "Injected"}},
        {"companion": {"mode": "Inject", "state": "Fallback", "reason": "NotLoaded"}},
        {"companion": {"mode": "Inject", "state": "Fallback", "image": IMAGE}},
        {"companion": {"mode": "Inject", "state": "Fallback", "image": 1, "reason": "NotLoaded"}},
        {"companion": {"state": "Fallback", "image": IMAGE, "reason": "NotLoaded"}},
        {"companion": {"mode": "Sidecar", "state": "Fallback", "image": IMAGE, "reason": "R"}},
        {"companion": {"mode": ["Inject"], "state": "Fallback", "image": IMAGE, "reason": "R"}},
    ],
    ids=[
        "no-record",
        "removed",
        "not-an-object",
        "injected",
        "no-image",
        "no-reason",
        "image-not-a-string",
        "no-mode",
        "unknown-mode",
        "mode-not-a-string",
    ],
)
def test_anything_but_a_whole_fallback_record_is_no_fallback(status: dict[str, Any]) -> None:
    assert companion.recorded_fallback(status) is None


def test_a_fallback_record_without_a_message_reads_as_an_empty_one() -> None:
    record = {"mode": "Inject", "state": "Fallback", "image": IMAGE, "reason": "NotPython"}
    assert companion.recorded_fallback({"companion": record}) == Fallback(
        image=IMAGE, mode=Mode.INJECT, reason="NotPython", message=""
    )


@pytest.mark.parametrize(
    ("plan", "serving", "workers", "status", "reason", "message"),
    [
        (Plan.INJECT, 3, 3, True, "Serving", "all 3 workers serve the worker contract"),
        (Plan.INSTALLED, 2, 2, True, "Serving", "all 2 workers serve the worker contract"),
        (Plan.INJECT, 2, 3, False, "Waiting", "2 of 3 workers serve"),
        (Plan.INSTALLED, 0, 1, False, "Waiting", "0 of 1 workers serve"),
        (Plan.INJECT, 0, 0, False, "Waiting", "0 of 0 workers serve"),
        (
            Plan.OFF,
            0,
            2,
            False,
            "Disabled",
            "spec.companion.mode is Disabled: scale-down by deletion cost",
        ),
    ],
    ids=[
        "all-serving",
        "installed-serving",
        "some-serving",
        "installed-waiting",
        "no-workers",
        "off",
    ],
)
def test_condition(
    plan: Plan, serving: int, workers: int, status: bool, reason: str, message: str
) -> None:
    words = companion.condition(plan, None, serving, workers)
    assert (words.status, words.reason) == (status, reason)
    assert message in words.message


def test_a_fallback_condition_carries_its_reason_and_says_what_brings_the_companion_back() -> None:
    words = companion.condition(Plan.FALLBACK, FALLBACK, 0, 2)
    assert (words.status, words.reason) == (False, "NotLoaded")
    assert words.message.startswith("the worker on p did not load it; the fleet runs without it")
    assert "until spec.image or the mode changes" in words.message
