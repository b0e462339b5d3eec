"""Bad input at scale: 1,000 hypothesis-made AgentWorkers sent through the real API server.

Each object is the shipped example with a few mutations drawn from the CRD's own schema (wrong
types, out-of-range numbers, odd and huge strings, nested garbage, missing and unknown fields,
conflicting fields, odd names) or from a table of valid-but-odd settings. The API server must
refuse it naming the field, or accept it and the operator must report a status: Degraded with a
reason and a message, or Ready/Progressing. All the while the operator must not crash, log no
traceback, and not stall: a valid AgentWorker created in a second namespace right after the
flood is Ready with one worker in bounded time.

The bad-input namespace has a ResourceQuota of zero pods: its Deployments are made but no worker
process is ever started for them (this machine has two cores).
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings
from kubernetes import client

from tests.e2e.operator.conftest import (
    CRD_FILE,
    SECRET_NAME,
    OperatorProcess,
    condition,
    example,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

logger = logging.getLogger(__name__)

OBJECTS = 1000
STATUS_BOUND_S = 200.0
"""Every accepted object has a status for its generation this long after the last create."""
READY_BOUND_S = 120.0
"""The valid AgentWorker made after the flood is Ready with one worker within this."""
SENDERS = 8
"""Creates in flight at once."""
G, V, P = "agentworker.dev", "v1alpha1", "agentworkers"
PARTIAL_SECRET = "partial-credentials"
"""A Secret with only LIVEKIT_API_KEY: an object naming it is Degraded SecretKeyMissing."""

FieldPath = tuple[str | int, ...]
DELETE = object()


# --- the mutations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edit:
    """Set (or delete) one path of the manifest; `names` is what a refusal should mention."""

    path: FieldPath
    value: object = DELETE
    names: str = ""

    def shown(self) -> str:
        return self.names or dotted(self.path)


def dotted(path: FieldPath) -> str:
    """("spec", "env", 0, "name") as the API server writes it: spec.env[0].name."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def apply_edit(manifest: dict[str, Any], edit: Edit) -> None:
    """Apply one edit in place; parents that are missing or of another shape become objects."""
    node: Any = manifest
    for key, after in zip(edit.path, edit.path[1:], strict=False):
        if isinstance(key, int):
            if not (isinstance(node, list) and len(node) > key):
                return  # an earlier edit replaced the list; this edit has nowhere to go
        elif not isinstance(node.get(key), list if isinstance(after, int) else dict):
            node[key] = [{}] if isinstance(after, int) else {}
        node = node[key]
    last = edit.path[-1]
    if isinstance(last, int):
        if isinstance(node, list) and len(node) > last:
            if edit.value is DELETE:
                del node[last]
            else:
                node[last] = edit.value
    elif edit.value is DELETE:
        node.pop(last, None)
    else:
        node[last] = edit.value


def opaque(schema: dict[str, Any]) -> bool:
    """A Kubernetes type the CRD passes through unchecked (x-kubernetes-preserve-unknown-fields)."""
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def schema_leaves() -> list[tuple[FieldPath, dict[str, Any]]]:
    """Every property under spec in the shipped CRD with its schema, parents included.

    Not inside a pass-through Kubernetes type (envFrom, tolerations, affinity, ...): garbage
    there is tested on its own below (the API server's apply refuses it, ApplyFailed).
    """
    crd = yaml.safe_load(CRD_FILE.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found: list[tuple[FieldPath, dict[str, Any]]] = []

    def walk(path: FieldPath, schema: dict[str, Any]) -> None:
        found.append((path, schema))
        if opaque(schema):
            return
        for name, child in (schema.get("properties") or {}).items():
            walk((*path, name), child)
        items = schema.get("items")
        if isinstance(items, dict) and items.get("properties"):
            walk((*path, 0), items)

    walk(("spec",), root)
    return found


LEAVES = schema_leaves()

# Any text, from every plane (no surrogates: they are not text).
any_character = st.characters(codec="utf-8")


def texts(*, min_size: int = 0, max_size: int) -> st.SearchStrategy[str]:
    return st.text(any_character, min_size=min_size, max_size=max_size)


# JSON values of every shape (no NaN or infinity: those are not JSON at all)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts(max_size=20),
)
garbage: st.SearchStrategy[object] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
huge_strings = st.builds(
    lambda seed, n: seed * n, texts(min_size=1, max_size=4), st.integers(1, 10_000)
)
odd_strings = st.one_of(
    texts(max_size=40),
    st.sampled_from(
        ["", " ", "\x00", "\u202e", "\ufeff", "ᚠ", "a\nb", "${HOME}", "'; DROP", "0x1F"]
    ),
    huge_strings,
)
durations = st.one_of(
    st.sampled_from(["0s", "1ms", "24h", "24h1ms", "25h", "1h1h", "1.5h", "-1s", "30", "m"]),
    st.builds(
        lambda n, u: f"{n}{u}", st.integers(0, 10**20), st.sampled_from(["ms", "s", "m", "h"])
    ),
)
quantities = st.one_of(
    st.sampled_from(["100m", "1Gi", "0", "-1", "1e3", "1.5", "1Ei", "9999999999999Pi", "1Q"]),
    st.integers(-5, 10**12),
)


def value_for(schema: dict[str, Any]) -> st.SearchStrategy[object]:
    """Values near a field's schema: edges of its range, its enum's neighbours, odd strings."""
    kind = schema.get("type")
    if "enum" in schema:
        enum = [str(e) for e in schema["enum"]]
        return st.one_of(
            st.sampled_from(enum), st.sampled_from([e.lower() for e in enum] + ["", "JT_ROOM"])
        )
    if opaque(schema) and not schema.get("properties"):
        return st.just({})
    if kind == "integer":
        low, high = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        return st.one_of(
            st.sampled_from([low - 1, low, high, high + 1, 2**63 - 1]),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.integers(low, high),
        )
    if kind == "number":
        return st.one_of(
            st.sampled_from([-0.0, 1e-300, 1.0000001, 1e308, 0.7]),
            st.floats(min_value=-2, max_value=3, allow_nan=False),
        )
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from(["true", 1, 0]))
    if kind == "string":
        if "pattern" in schema and "ms|s|m|h" in schema["pattern"]:
            return durations
        return odd_strings
    if kind == "array":
        items = schema.get("items") or {}
        return st.lists(value_for(items) if items else garbage, max_size=5)
    if schema.get("additionalProperties"):
        extra = schema["additionalProperties"]
        values = quantities if extra.get("x-kubernetes-int-or-string") else odd_strings
        keys = st.one_of(texts(max_size=30), st.sampled_from(["cpu", "memory", "a/b", "x" * 70]))
        return st.dictionaries(keys, values, max_size=5)
    props = schema.get("properties") or {}
    if props:
        return st.fixed_dictionaries(
            {}, optional={name: value_for(sub) for name, sub in props.items()}
        )
    return garbage


@st.composite
def schema_edit(draw: st.DrawFn) -> Edit:
    """One field of spec set to a value near (or far from) its schema, or removed."""
    path, schema = draw(st.sampled_from(LEAVES))
    how = draw(st.sampled_from(["near", "near", "near", "garbage", "delete", "unknown"]))
    if how == "delete" and path != ("spec",):
        return Edit(path)
    if how == "unknown" and schema.get("properties"):
        key = draw(st.one_of(st.sampled_from(["extra", "Replicas", "image "]), texts(max_size=9)))
        return Edit((*path, key), draw(garbage))
    if how == "garbage" and not (opaque(schema) or opaque(schema.get("items") or {})):
        return Edit(path, draw(garbage))
    return Edit(path, draw(value_for(schema)))


CONFLICTS: list[list[Edit]] = [
    [Edit(("spec", "command"), ["python", "agent.py", "start"], names="spec")],
    [Edit(("spec", "entrypoint")), Edit(("spec", "command"), ["python", "agent.py", "start"])],
    [Edit(("spec", "entrypoint"))],
    [Edit(("spec", "args"), ["start"])],
    [
        Edit(("spec", "autoscaling", "minReplicas"), 5),
        Edit(("spec", "autoscaling", "maxReplicas"), 2),
    ],
    [Edit(("spec", "loadThreshold"), 0.3), Edit(("spec", "autoscaling", "targetLoad"), 0.9)],
    [Edit(("spec", "jobMemory"), {"warnMB": 900, "limitMB": 100})],
    [Edit(("spec", "env"), [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])],
    [Edit(("spec", "env"), [{"name": "LIVEKIT_URL", "value": "ws://x"}])],
    [Edit(("spec", "env"), [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {}}}])],
    [Edit(("spec", "podTemplate", "labels"), {"app.kubernetes.io/instance": "x"})],
    [Edit(("spec", "podTemplate", "volumes"), [{"name": "tmp", "emptyDir": {}}])],
    [Edit(("spec", "autoscaling", "scaleUp", "busyWorkers"), "Drain")],
    [Edit(("spec", "autoscaling"), {"enabled": True, "minReplicas": 0})],  # without the guard
    [Edit(("spec",), "not an object")],
    [Edit(("spec",), [])],
    [Edit(("spec",), {})],
]
"""Fields that are fine alone and wrong together, and a spec that is not an object at all."""

VALID_BUT_ODD: list[list[Edit]] = [
    [Edit(("spec", "replicas"), 0)],
    [Edit(("spec", "replicas"), 1000)],
    [
        Edit(("spec", "autoscaling"), {"enabled": True, "minReplicas": 0, "maxReplicas": 1000}),
        Edit(("spec", "dispatchGuard"), {"enabled": True}),
    ],
    [Edit(("spec", "autoscaling", "minAvailableWorkers"), 1000)],
    [Edit(("spec", "autoscaling", "scaleDown", "period"), "48h")],
    [Edit(("spec", "autoscaling", "scaleUp", "stabilizationWindow"), "99999999h")],
    [Edit(("spec", "drainTimeout"), "0s"), Edit(("spec", "shutdownProcessTimeout"), "1ms")],
    [Edit(("spec", "agentName"), "エージェント \u202e\x00")],
    [Edit(("spec", "agentName"), "")],
    [Edit(("spec", "workerType"), "PUBLISHER"), Edit(("spec", "logLevel"), "DEBUG")],
    [Edit(("spec", "entrypoint")), Edit(("spec", "command"), ["python", "-c", "pass"])],
    [Edit(("spec", "livekit", "credentialsSecret", "name"), "missing-credentials")],
    [Edit(("spec", "livekit", "credentialsSecret", "name"), PARTIAL_SECRET)],
    [Edit(("spec", "env"), [{"name": "BIG", "value": "v" * 200_000}])],
    [Edit(("spec", "podTemplate", "annotations"), {"a": "b" * 300_000})],
    [Edit(("spec", "podTemplate", "labels"), {"team": "not a label value!"})],
    [Edit(("spec", "podTemplate", "tolerations"), [{"operator": "Sometimes"}])],
    [Edit(("spec", "podTemplate", "serviceAccountName"), "Not_A_Name")],
    [Edit(("spec", "startupProbe"), {"httpGet": {"port": "nope"}, "periodSeconds": -3})],
    [Edit(("spec", "resources"), {"limits": {"cpu": "1m"}, "requests": {"cpu": "2"}})],
    [Edit(("spec", "volumeMounts"), [{"name": "ghost", "mountPath": "relative"}])],
    [Edit(("spec", "envFrom"), [{"configMapRef": {"name": "ghost"}}])],
    [Edit(("spec", "image"), "a" * 5000)],
]
"""Objects the schema lets through: the operator must say what it makes of each."""


def livekit_urls(rig_url: str) -> st.SearchStrategy[str]:
    """URLs that pass the schema's pattern but only ever point at this machine (no DNS)."""
    port = rig_url.rsplit(":", 1)[1]
    hosts = st.sampled_from(
        ["127.0.0.1:" + port, "localhost:" + port, "127.0.0.1:1", "[::1]:" + port, "[::1"]
    )
    tails = st.one_of(
        st.just(""),
        st.builds("/{}".format, texts(max_size=30)),
        st.builds("?{}".format, texts(max_size=30)),
        st.builds(":{}".format, texts(max_size=8)),
        st.builds("#{}".format, texts(max_size=8)),
    )
    return st.builds("{}://{}{}".format, st.sampled_from(["ws", "wss"]), hosts, tails)


names = st.one_of(
    st.sampled_from(["a", "a" * 50, "a" * 51, "my.agent", "1agent", "Agent", "a-", "-a", "a_b"]),
    st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    texts(max_size=60),
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One manifest to send and the edits that made it."""

    manifest: dict[str, Any]
    edits: tuple[Edit, ...]
    strict: bool
    """Sent with fieldValidation=Strict (unknown fields refused) rather than the default Warn."""


@st.composite
def candidates(draw: st.DrawFn, base: dict[str, Any], rig_url: str) -> Candidate:
    manifest = copy.deepcopy(base)
    groups = st.one_of(
        st.lists(schema_edit(), min_size=1, max_size=3),
        st.sampled_from(CONFLICTS),
        st.sampled_from(VALID_BUT_ODD),
        st.builds(lambda u: [Edit(("spec", "livekit", "url"), u)], livekit_urls(rig_url)),
        st.builds(
            lambda n: [Edit(("metadata", "name"), n, names="metadata.name")],
            names,
        ),
        st.builds(
            lambda k, v: [Edit(("metadata", "labels"), {k: v}, names="metadata.labels")],
            texts(max_size=70),
            texts(max_size=70),
        ),
    )
    edits = tuple(e for group in draw(st.lists(groups, min_size=1, max_size=2)) for e in group)
    for edit in edits:
        apply_edit(manifest, edit)
    # past etcd's 1.5 MB an object fails with a 500 from etcd, not a validation error
    assume(len(json.dumps(manifest)) < 1_000_000)
    return Candidate(manifest=manifest, edits=edits, strict=draw(st.booleans()))


# --- sending and counting -----------------------------------------------------------------------


@dataclass
class Tally:
    """What became of every object sent."""

    tried: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(the edits, the API server's message) of each refusal."""
    refused_unnamed: list[tuple[str, str]] = field(default_factory=list)
    """Refusals whose message names none of the edited fields."""
    other_errors: list[tuple[str, int, str]] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)
    """name -> the edits, of each object the API server stored."""

    def record_refusal(self, candidate: Candidate, error: client.ApiException) -> None:
        shown = "; ".join(e.shown() for e in candidate.edits)
        try:
            message = str(json.loads(error.body or "{}").get("message", error.body))
        except (TypeError, ValueError):
            message = str(error.body)
        if error.status not in (400, 422):
            self.other_errors.append((shown, error.status, message[:500]))
            return
        self.refused.append((shown, message[:300]))
        if not any(names_field(e, message) for e in candidate.edits):
            self.refused_unnamed.append((shown, message[:500]))


def names_field(edit: Edit, message: str) -> bool:
    """Whether the API server's message names the edited field or one of its parents."""
    if edit.names and edit.names in message:
        return True
    path = edit.path
    if len(path) == 1:
        return dotted(path) in message
    # the schema reports a wrong type at the field or an enclosing object; a CEL rule on spec
    # names the field in its own words ("exactly one of entrypoint and command")
    leaf = path[-1]
    return any(dotted(path[:depth]) in message for depth in range(len(path), 1, -1)) or (
        isinstance(leaf, str) and len(leaf) > 2 and leaf in message
    )


def named(candidate: Candidate, index: int, taken: set[str]) -> dict[str, Any]:
    """The manifest with a name of its own: bad-NNNN unless an edit chose one not yet used."""
    manifest = candidate.manifest
    meta = manifest.setdefault("metadata", {})
    if meta.get("name") in ("basic-agent", *taken):
        meta["name"] = f"bad-{index:04d}"
    if isinstance(meta.get("name"), str):
        taken.add(meta["name"])
    return manifest


def send(api: client.CustomObjectsApi, namespace: str, candidate: Candidate, tally: Tally) -> None:
    manifest = candidate.manifest
    try:
        api.create_namespaced_custom_object(
            G, V, namespace, P, manifest,
            field_validation="Strict" if candidate.strict else "Warn",
            _request_timeout=30,
        )  # fmt: skip
    except client.ApiException as error:
        with tally.lock:
            tally.record_refusal(candidate, error)
        return
    with tally.lock:
        tally.accepted[manifest["metadata"]["name"]] = "; ".join(e.shown() for e in candidate.edits)


def draw_flood(rig: rig_env.RigEnv) -> list[Candidate]:
    """OBJECTS candidates, the same on every run and in CI."""
    base = example(rig, replicas=1)
    drawn: list[Candidate] = []

    # derandomized and generate-only: the body never fails, so hypothesis runs it exactly
    # max_examples times and never shrinks; one draw per example keeps each draw small
    @settings(
        max_examples=OBJECTS,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(candidates(base, rig.livekit_url))
    def collect(candidate: Candidate) -> None:
        drawn.append(candidate)

    collect()
    taken: set[str] = set()
    for index, candidate in enumerate(drawn):
        named(candidate, index, taken)
    return drawn


def send_flood(api: client.CustomObjectsApi, namespace: str, flood: list[Candidate]) -> Tally:
    """Create every candidate, a few at a time, as a burst of clients would."""
    tally = Tally(tried=len(flood))
    with concurrent.futures.ThreadPoolExecutor(max_workers=SENDERS) as pool:
        for done in [pool.submit(send, api, namespace, c, tally) for c in flood]:
            done.result()
    return tally


def read(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(G, V, namespace, P, name)  # type: ignore[assignment]  # the client types it object
    return obj


def verdict(obj: dict[str, Any]) -> str | None:
    """What the operator's status says about obj: None while it has not spoken for this spec."""
    state = obj.get("status") or {}
    if state.get("observedGeneration") != obj["metadata"].get("generation"):
        return None
    degraded, ready = condition(obj, "Degraded"), condition(obj, "Ready")
    if not degraded or not ready:
        return None
    if degraded.get("status") == "True":
        if not degraded.get("reason") or not degraded.get("message"):
            return "degraded-without-reason"
        return f"Degraded:{degraded['reason']}"
    if ready.get("status") == "True":
        return "Ready"
    return f"Progressing:{condition(obj, 'Progressing').get('reason')}"


def tracebacks(logs: str) -> collections.Counter[str]:
    """The exceptions of the operator's logged tracebacks, by type (JSON log lines)."""
    found: collections.Counter[str] = collections.Counter()
    for line in logs.splitlines():
        if "Traceback (most recent call last)" not in line:
            continue
        try:
            text = str(json.loads(line).get("exception", ""))
        except ValueError:
            text = line  # not a JSON record: count it whole
        last = text.strip().splitlines()[-1] if text.strip() else line
        found[last.split(":", 1)[0].rsplit(".", 1)[-1]] += 1
    return found


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def good_namespace(core: client.CoreV1Api, rig: rig_env.RigEnv) -> Iterator[str]:
    """A second namespace, with credentials, for the valid AgentWorker made after the flood."""
    name = f"bad-input-good-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(
        f"serviceaccount default in {name}",
        lambda: core.list_namespaced_service_account(name).items,
        lambda items: any(sa.metadata.name == "default" for sa in items),
        timeout_s=60,
    )
    core.create_namespaced_secret(name, credentials_secret(SECRET_NAME, rig, both=True))
    yield name
    core.delete_namespace(name)


def credentials_secret(name: str, rig: rig_env.RigEnv, *, both: bool) -> client.V1Secret:
    data = {"LIVEKIT_API_KEY": rig.livekit_api_key}
    if both:
        data["LIVEKIT_API_SECRET"] = rig.livekit_api_secret
    return client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)


@pytest.fixture
def no_pods(core: client.CoreV1Api, namespace: str) -> None:
    """No pod can be made in the test's namespace: its Deployments never start a process."""
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-pods"),
        spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)
    wait_for(
        "the quota's status (enforced from then on)",
        lambda: core.read_namespaced_resource_quota("no-pods", namespace).status,
        lambda state: state is not None and state.hard is not None,
        timeout_s=30,
    )


@pytest.fixture
def both_operator(
    rig: rig_env.RigEnv, namespace: str, good_namespace: str, crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """One operator watching both namespaces: a stall on bad input would stall the good one."""
    process = OperatorProcess(
        rig, namespace, tmp_path / "operator.log", extra_args=(f"--namespace={good_namespace}",)
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


# --- the test ---------------------------------------------------------------------------------


def test_a_thousand_bad_agentworkers_are_refused_or_reported_and_a_good_one_still_gets_ready(
    rig: rig_env.RigEnv, api_client: client.ApiClient, core: client.CoreV1Api, namespace: str,
    good_namespace: str, credentials: str, no_pods: None, both_operator: OperatorProcess,
) -> None:  # fmt: skip
    core.create_namespaced_secret(namespace, credentials_secret(PARTIAL_SECRET, rig, both=False))
    api = client.CustomObjectsApi(api_client)
    drawing = time.monotonic()
    flood = draw_flood(rig)
    drawn_s = time.monotonic() - drawing
    started = time.monotonic()
    tally = send_flood(api, namespace, flood)
    sent_s = time.monotonic() - started

    # the valid one, right behind the flood, while the operator is still working through it
    good = example(rig, replicas=1)
    good["metadata"]["name"] = "good-agent"
    api.create_namespaced_custom_object(G, V, good_namespace, P, good)
    good_started = time.monotonic()
    wait_for(
        "the valid AgentWorker Ready with one ready worker",
        lambda: read(api, good_namespace, "good-agent"),
        lambda obj: verdict(obj) == "Ready" and obj["status"].get("readyReplicas") == 1,
        timeout_s=READY_BOUND_S,
        interval_s=0.5,
    )
    good_ready_s = time.monotonic() - good_started

    def verdicts() -> dict[str, str | None]:
        listed: dict[str, Any] = api.list_namespaced_custom_object(G, V, namespace, P)  # type: ignore[assignment]  # the client types it object
        return {o["metadata"]["name"]: verdict(o) for o in listed["items"]}

    seen = wait_for(
        f"a status on each of the {len(tally.accepted)} accepted objects",
        verdicts,
        lambda found: all(found.get(name) for name in tally.accepted),
        timeout_s=max(10.0, STATUS_BOUND_S - (time.monotonic() - started - sent_s)),
        interval_s=2.0,
    )
    statuses_s = time.monotonic() - started - sent_s

    crashes = tracebacks(both_operator.logs())
    outcomes = collections.Counter(str(seen[name]) for name in tally.accepted)
    degraded = {k.split(":", 1)[1]: n for k, n in outcomes.items() if k.startswith("Degraded:")}
    summary = {
        "tried": tally.tried,
        "refused": len(tally.refused),
        "refused_without_naming_the_field": len(tally.refused_unnamed),
        "other_api_errors": len(tally.other_errors),
        "accepted": len(tally.accepted),
        "degraded": sum(degraded.values()),
        "degraded_by_reason": dict(sorted(degraded.items())),
        "ready": outcomes["Ready"],
        "progressing": sum(n for k, n in outcomes.items() if k.startswith("Progressing:")),
        "crashes": 0 if both_operator.health() is not None else 1,
        "tracebacks_by_exception": dict(crashes),
        "draw_s": round(drawn_s, 1),
        "send_s": round(sent_s, 1),
        "statuses_after_send_s": round(statuses_s, 1),
        "good_ready_s": round(good_ready_s, 1),
    }
    logger.info("bad input summary: %s", json.dumps(summary))
    print(f"bad input: {json.dumps(summary)}")
    (rig.logs_dir / "bad-input.json").write_text(
        json.dumps(
            {
                **summary,
                "refused_examples": tally.refused[:20],
                "refused_unnamed": tally.refused_unnamed[:20],
                "other_api_errors": tally.other_errors[:20],
                "accepted_by_outcome": {
                    k: [n for n in tally.accepted if seen[n] == k][:5] for k in outcomes
                },
            },
            indent=2,
        )
    )

    assert tally.tried == OBJECTS
    assert not tally.other_errors, tally.other_errors[:5]
    assert not tally.refused_unnamed, tally.refused_unnamed[:5]
    assert "degraded-without-reason" not in outcomes
    assert both_operator.health() is not None, "the operator process died"
    assert "leader lease lost" not in both_operator.logs()
    assert not crashes, crashes
    # the API server could not even decode what the operator sent: the operator's fault, never
    # the object's (it hid as ApplyFailed once, for text a YAML parser refuses)
    assert "error decoding patch" not in both_operator.logs()
    assert tally.refused, summary
    assert tally.accepted, summary


# --- inputs the flood does not make, each tested on its own ------------------------------------


def wait_verdict(
    api: client.CustomObjectsApi, namespace: str, name: str, timeout_s: float = 60.0
) -> str | None:
    obj = wait_for(
        f"a status on {name}",
        lambda: read(api, namespace, name),
        lambda o: verdict(o) is not None,
        timeout_s=timeout_s,
    )
    return verdict(obj)


def test_an_agent_name_beyond_the_basic_plane_is_deployed(
    rig: rig_env.RigEnv, api_client: client.ApiClient, namespace: str, credentials: str,
    no_pods: None, operator: OperatorProcess,
) -> None:  # fmt: skip
    api = client.CustomObjectsApi(api_client)
    manifest = example(rig, replicas=1, agentName="agent 🤖")
    api.create_namespaced_custom_object(G, V, namespace, P, manifest)
    assert wait_verdict(api, namespace, "basic-agent") != "Degraded:ApplyFailed"


def test_a_pass_through_field_of_the_wrong_type_is_degraded_without_a_traceback(
    rig: rig_env.RigEnv, api_client: client.ApiClient, namespace: str, credentials: str,
    no_pods: None, operator: OperatorProcess,
) -> None:  # fmt: skip
    api = client.CustomObjectsApi(api_client)
    manifest = example(rig, replicas=1, envFrom=[{"configMapRef": 7}])
    api.create_namespaced_custom_object(G, V, namespace, P, manifest)
    assert wait_verdict(api, namespace, "basic-agent", timeout_s=30) == "Degraded:ApplyFailed"
    assert "Traceback" not in operator.logs()
