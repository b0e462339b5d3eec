"""Job metadata of every shape, dispatched through the real LiveKit server to one worker.

Hypothesis draws the metadata: empty, odd Unicode (beyond the Basic Plane too), NUL bytes, JSON
objects, arrays and scalars, text that is not JSON, deep nesting, and sizes up to the server's
own limit (512 KiB: 524,288 bytes pass, one more byte is refused, found by trying). The e2e agent
parses the metadata as a JSON object, so every object must reach it byte for byte and succeed,
and anything else must fail cleanly: a "job failed" record with a reason. The worker stays ready
throughout, and a long job started first runs on untouched to success.
"""

from __future__ import annotations

import json
import uuid

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from livekit.api.twirp_client import ServerError

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, WorkerProc, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

AGENTS = "tests.e2e.runtime.agents"
DRAWN = 24
"""Hypothesis-drawn metadata per run (plus the fixed edge cases below)."""
SERVER_LIMIT = 524_288
"""The largest dispatch metadata livekit-server accepts, in bytes."""

# keys start with "k": never one the e2e agent acts on (crash, raise, sleep_s, hog_mb, ...)
keys = st.builds("k{}".format, st.text(max_size=12))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(keys, json_values, max_size=6).map(json.dumps)
unescaped_objects = st.dictionaries(keys, st.text(max_size=40), max_size=4).map(
    lambda value: json.dumps(value, ensure_ascii=False)  # raw UTF-8, NUL and astral characters
)
nested_objects = st.integers(1, 200).map(lambda depth: '{"k":' * depth + "{}" + "}" * depth)
nested_lists = st.integers(1, 5000).map(lambda depth: "[" * depth + "]" * depth)
big_objects = st.integers(1, SERVER_LIMIT - 20).map(lambda n: json.dumps({"k": "x" * n}))
not_objects = st.one_of(
    json_values.map(json.dumps).filter(lambda text: not text.startswith("{")),
    st.text(max_size=60).filter(lambda text: not is_object(text)),
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")),
)
metadata = st.one_of(
    json_objects, unescaped_objects, nested_objects, nested_lists, big_objects, not_objects
)

EDGES = [
    "",
    "{}",
    "\x00",
    '{"k": "\\u0000 nul"}',
    '{"k": "\x00 raw nul 🤖 𝄞"}',
    "🤖",
    "null",
    "not json {",
    json.dumps({"k": "x" * (SERVER_LIMIT - len('{"k": ""}'))}),  # exactly the server's limit
]


def is_object(text: str) -> bool:
    """Whether the e2e agent will take `text` as its JSON object metadata ("" counts as {})."""
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except (ValueError, RecursionError):
        return False


def draw_metadata() -> list[str]:
    """DRAWN metadata strings, the same on every run and in CI."""
    drawn: list[str] = []

    # derandomized and generate-only: the body never fails, so it runs exactly max_examples times
    @settings(
        max_examples=DRAWN,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(metadata)
    def collect(text: str) -> None:
        drawn.append(text)

    collect()
    return [text for text in drawn if len(text.encode()) <= SERVER_LIMIT]


def ended(worker: WorkerProc) -> list[dict[str, object]]:
    return worker.find("job succeeded") + worker.find("job failed")


async def test_job_metadata_of_every_shape_runs_or_fails_cleanly_and_a_long_job_is_untouched(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(f"{AGENTS}:opts", livekit, agent_name=agent_name, idle=2)
    long_room = f"long-{uuid.uuid4().hex[:8]}"
    await livekit.dispatch(agent_name, long_room, json.dumps({"sleep_s": 40}))
    [long_run] = await worker.wait_for("e2e job running", room=long_room)
    long_job = long_run["job_id"]

    with pytest.raises(ServerError, match="metadata size exceeds limits"):
        await livekit.dispatch(agent_name, "too-big", "x" * (SERVER_LIMIT + 1))

    cases = EDGES + draw_metadata()
    rooms: dict[str, str] = {}
    for i, text in enumerate(cases):
        room = f"meta-{i}-{uuid.uuid4().hex[:6]}"
        rooms[room] = text
        before = len(ended(worker))
        await livekit.dispatch(agent_name, room, text)
        # one at a time: a worker busy with many starts could report itself full, and a
        # self-hosted server drops a dispatch that finds no available worker
        await until_ended(worker, before + 1)
        assert await worker.status("/readyz") == 200, f"not ready after metadata #{i}"

    ran = {str(r["room"]): r for r in worker.find("e2e job running") if r["room"] in rooms}
    outcomes = {str(r["job_id"]): r for r in ended(worker)}
    for room, text in rooms.items():
        if is_object(text):
            assert room in ran, f"JSON object metadata never ran: {text[:80]!r}"
            assert ran[room]["metadata"] == text, f"metadata changed on the way: {text[:80]!r}"
            outcome = outcomes[str(ran[room]["job_id"])]
            assert outcome["message"] == "job succeeded", (text[:80], outcome)
    failed = worker.find("job failed")
    assert all(r.get("reason") and r.get("error") for r in failed), failed[:3]
    assert len(outcomes) == len(rooms), "every metadata job ended, and only once"
    expected_failures = sum(1 for text in rooms.values() if not is_object(text))
    assert len(failed) == expected_failures

    assert long_job not in outcomes, "the long job ended early"
    [done] = await worker.wait_for("job succeeded", job_id=long_job, within_s=60)
    assert done["reason"] == "success"


async def until_ended(worker: WorkerProc, count: int) -> None:
    async def check() -> bool:
        return len(ended(worker)) >= count

    await eventually(check, within_s=20, what=f"{count} jobs ended", last=worker.tail)
