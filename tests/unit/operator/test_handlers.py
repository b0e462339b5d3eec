"""Reconciles of one AgentWorker run one at a time; triggers that come while one waits join it.

`handlers._reconcile` (the API calls) is replaced with a fake that records whether each run was
whole; holding the AgentWorker's lock stands for a reconcile in progress, so the next ones wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
import pytest

from agentworker_operator import builders, handlers, kube, status
from agentworker_operator import spec as specs
from tests.unit.operator.test_spec import MINIMAL

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

NAMESPACE, NAME = "team-a", "support"
KEY = (NAMESPACE, NAME)
PROBLEM = status.Problem(reason="ApplyFailed", message="the API server refused the Deployment")


class FakeReconcile:
    """Stands in for `handlers._reconcile`: records `full` of each run, answers `outcome`."""

    def __init__(self, outcome: status.Problem | Exception | None = None) -> None:
        self.runs: list[bool] = []
        self.outcome = outcome

    async def __call__(
        self, memo: Any, namespace: str, name: str, logger: Any, *, full: bool
    ) -> status.Problem | None:
        self.runs.append(full)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeReconcile:
    reconcile = FakeReconcile()
    monkeypatch.setattr(handlers, "_reconcile", reconcile)
    return reconcile


@pytest.fixture
def memo() -> dict[str, Any]:
    return {"pending": {}, "locks": {}}


def trigger(memo: dict[str, Any], *, full: bool) -> asyncio.Task[status.Problem | None]:
    """A reconcile, as a handler (full) or a sync round (light) starts one."""
    return asyncio.create_task(
        handlers.reconcile(
            memo,
            NAMESPACE,
            NAME,
            trigger="change" if full else "sync",
            logger=logging.getLogger(__name__),
            full=full,
        )
    )


async def settle() -> None:
    """Let every started task run until it waits (for the lock or for a turn it joined)."""
    for _ in range(10):
        await asyncio.sleep(0)


def lock(memo: dict[str, Any]) -> asyncio.Lock:
    """The AgentWorker's lock: held, it stands for a reconcile in progress."""
    found: asyncio.Lock = memo["locks"].setdefault(KEY, asyncio.Lock())
    return found


async def test_a_change_joining_a_waiting_sync_round_makes_the_one_run_whole(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    async with lock(memo):
        sync_round = trigger(memo, full=False)
        await settle()
        change = trigger(memo, full=True)
        await settle()
        assert fake.runs == []
    assert await sync_round is None
    assert await change is None
    assert fake.runs == [True], "one run, and a whole one: the change is not left for the resync"


async def test_a_sync_round_joining_a_waiting_change_keeps_the_run_whole(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    async with lock(memo):
        change = trigger(memo, full=True)
        await settle()
        sync_round = trigger(memo, full=False)
        await settle()
    await asyncio.gather(change, sync_round)
    assert fake.runs == [True]


async def test_every_trigger_that_joined_gets_the_problem_the_run_found(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    fake.outcome = PROBLEM
    async with lock(memo):
        tasks = [trigger(memo, full=False), trigger(memo, full=True), trigger(memo, full=True)]
        await settle()
    assert await asyncio.gather(*tasks) == [PROBLEM] * 3, "kopf is not told a success"
    assert fake.runs == [True]


async def test_every_trigger_that_joined_fails_when_the_run_fails(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    fake.outcome = kube.KubeError(403, "Forbidden", "no")
    async with lock(memo):
        tasks = [trigger(memo, full=False), trigger(memo, full=True)]
        await settle()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r) for r in results] == [kube.KubeError, kube.KubeError]
    assert fake.runs == [True]


async def test_a_trigger_after_the_run_started_gets_a_run_of_its_own(
    monkeypatch: pytest.MonkeyPatch, memo: dict[str, Any]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[bool] = []

    async def slow(memo: Any, namespace: str, name: str, logger: Any, *, full: bool) -> None:
        runs.append(full)
        started.set()
        await release.wait()

    monkeypatch.setattr(handlers, "_reconcile", slow)
    sync_round = trigger(memo, full=False)
    await started.wait()  # it has read what it reads: a change now needs another run
    change = trigger(memo, full=True)
    await settle()
    release.set()
    await asyncio.gather(sync_round, change)
    assert runs == [False, True]


async def test_a_joined_trigger_runs_the_reconcile_when_the_first_is_cancelled_waiting(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    async with lock(memo):
        first = trigger(memo, full=True)
        await settle()
        joined = trigger(memo, full=False)
        await settle()
        first.cancel()
        await settle()
    assert await joined is None
    assert first.cancelled()
    assert fake.runs == [True], "the cancelled trigger's change still gets its whole run"


async def test_a_trigger_cancelled_waiting_for_the_lock_does_not_wedge_the_next_ones(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    async with lock(memo):
        first = trigger(memo, full=False)
        await settle()
        first.cancel()
        await settle()
    assert first.cancelled()
    assert memo["pending"] == {}
    assert await trigger(memo, full=True) is None
    assert fake.runs == [True]


async def test_a_joined_trigger_cancelled_leaves_the_run_to_the_others(
    fake: FakeReconcile, memo: dict[str, Any]
) -> None:
    fake.outcome = PROBLEM
    async with lock(memo):
        first = trigger(memo, full=False)
        await settle()
        joined = trigger(memo, full=True)
        await settle()
        joined.cancel()
        await settle()
    assert await first == PROBLEM
    assert joined.cancelled()
    assert fake.runs == [True], "what it asked for before it went still counts"


def test_watches_end_on_the_client_side_a_minute_after_the_server_should_end_them() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    server_s = settings.watching.server_timeout
    assert server_s is not None
    assert settings.watching.client_timeout == server_s + 60


def agentworker_body(spec: dict[str, Any], annotations: dict[str, str]) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "agentworker.dev/v1alpha1",
            "kind": "AgentWorker",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "annotations": annotations},
            "spec": spec,
            "status": {"replicas": 1},
        }
    )


def test_kopfs_last_handled_configuration_is_a_digest_that_moves_with_the_spec_only() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    storage = settings.persistence.diffbase_storage
    big = {"image": "agent:1", "env": [{"name": "BIG", "value": "v" * 300_000}]}
    body = agentworker_body(big, {"team": "a"})
    essence = storage.build(body=body)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    stored = patch["metadata"]["annotations"]["agentworker.dev/last-handled-configuration"]
    # a copy of the spec would pass the API server's 256 KiB limit of all annotations
    assert len(stored) < 200, len(stored)
    written = agentworker_body(big, {"team": "a", **patch["metadata"]["annotations"]})
    assert storage.fetch(body=written) == essence == storage.build(body=written)

    def digest(spec: dict[str, Any], annotations: dict[str, str]) -> object:
        return storage.build(body=agentworker_body(spec, annotations))

    # what kopf and the operator write themselves is no change, the user's edits are
    progress = {"agentworker.dev/on_change": '{"retries": 1}', "team": "a"}
    assert digest(big, progress) == essence
    assert digest({**big, "image": "agent:2"}, {"team": "a"}) != essence
    assert digest(big, {"team": "b"}) != essence


class ChildrenKube:
    """The API server as `_apply_children` uses it: applies and owned deletes, recorded."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.deleted: list[tuple[str, str]] = []

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest["kind"])
        return manifest

    async def delete_owned(self, path: str, owner_uid: str) -> bool:
        self.deleted.append((path, owner_uid))
        return True


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_disruption_budget_is_applied_when_enabled_and_deleted_when_not(
    enabled: bool,
) -> None:
    owner = builders.Owner(name=NAME, namespace=NAMESPACE, uid="uid-1")
    spec = specs.parse_spec({**MINIMAL, "disruptionBudget": {"enabled": enabled}})
    client = ChildrenKube()
    problem, deployment_applied = await handlers._apply_children(
        cast(kube.Kube, client), owner, spec, 2, "token", builders.injection_for(spec)
    )
    assert (problem, deployment_applied) == (None, True)
    if enabled:
        assert client.applied == ["Deployment", "PodDisruptionBudget", "Service"]
        assert not client.deleted
    else:
        assert client.applied == ["Deployment", "Service"]
        path = kube.path_of("policy/v1", "PodDisruptionBudget", NAMESPACE, NAME)
        assert client.deleted == [(path, "uid-1")]


class DeletingKube(kube.Kube):
    """`Kube.request` over a stored object: GET answers it, DELETE records its preconditions."""

    def __init__(self, stored: dict[str, Any] | None) -> None:
        self.stored = stored
        self.deletes: list[Any] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            if self.stored is None:
                raise kube.KubeError(404, "NotFound", "not found")
            return self.stored
        assert method == "DELETE"
        self.deletes.append(kwargs["body"])
        return {}


def budget_owned_by(uid: str | None) -> dict[str, Any]:
    refs = [] if uid is None else [{"uid": uid, "controller": True, "kind": "AgentWorker"}]
    return {"metadata": {"name": NAME, "uid": "pdb-uid", "ownerReferences": refs}}


@pytest.mark.parametrize(
    ("stored", "deleted"),
    [
        (budget_owned_by("uid-1"), True),
        (budget_owned_by("another-agentworker"), False),
        (budget_owned_by(None), False),  # the user's own budget of that name
        (None, False),
    ],
    ids=["ours", "another-owners", "the-users", "none"],
)
async def test_only_a_child_the_agentworker_controls_is_deleted(
    stored: dict[str, Any] | None, deleted: bool
) -> None:
    client = DeletingKube(stored)
    path = kube.path_of("policy/v1", "PodDisruptionBudget", NAMESPACE, NAME)
    assert await client.delete_owned(path, "uid-1") is deleted
    if deleted:
        (options,) = client.deletes
        assert options["preconditions"] == {"uid": "pdb-uid"}  # not a newer one of the name
    else:
        assert not client.deletes
