"""Finding the credentials in the memory blocks /proc/<pid>/environ and cmdline show."""

from __future__ import annotations

import pytest

from worker_runtime import secrecy

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def wiped(block: bytes, ranges: list[tuple[int, int]]) -> bytes:
    out = bytearray(block)
    for offset, length in ranges:
        out[offset : offset + length] = b"\0" * length
    return bytes(out)


def test_only_the_secret_entries_of_the_environment_block_are_found() -> None:
    block = (
        b"LIVEKIT_URL=ws://lk\0LIVEKIT_API_SECRET=s3cr3t\0HOME=/tmp\0"
        b"AGENT_CONTROL_TOKEN=tok\0LIVEKIT_API_SECRET_FILE=/keep\0"
    )
    ranges = secrecy.entry_ranges(block, secrecy.SECRET_VARIABLES)
    assert b"s3cr3t" in block
    after = wiped(block, ranges)
    entries = [e for e in after.split(b"\0") if e]
    assert entries == [b"LIVEKIT_URL=ws://lk", b"HOME=/tmp", b"LIVEKIT_API_SECRET_FILE=/keep"]
    assert len(after) == len(block), "the block keeps its size: nothing after it moves"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([b"--api-secret", b"s3cr3t"], [b"--api-secret", b""], id="separate-value"),
        pytest.param([b"--api-secret=s3cr3t"], [b"--api-secret="], id="equals-value"),
        pytest.param([b"--api-s=s3cr3t"], [b"--api-s="], id="abbreviated-flag"),
        pytest.param([b"my_agent:s3cr3t_fn"], [b"my_agent:s3cr3t_fn"], id="part-of-another-arg"),
        pytest.param([b"key=s3cr3t"], [b"key=s3cr3t"], id="positional-with-equals"),
        pytest.param([b"--api-secret", b"-s3=cr"], [b"--api-secret", b""], id="dash-value"),
        pytest.param([b"--api-secret=-s3=cr"], [b"--api-secret="], id="equals-dash-value"),
    ],
)
def test_an_argument_is_wiped_only_where_it_is_the_secret(
    argv: list[bytes], expected: list[bytes]
) -> None:
    block = b"\0".join([b"agent-worker", b"start", *argv]) + b"\0"
    after = wiped(block, secrecy.value_ranges(block, ["s3cr3t", "-s3=cr", ""]))
    assert [a for a in after.split(b"\0") if a][2:] == [a for a in expected if a]


def test_an_empty_secret_matches_nothing() -> None:
    block = b"agent-worker\0\0start\0"
    assert secrecy.value_ranges(block, [""]) == []


def test_memory_blocks_are_read_after_a_command_name_with_spaces_and_parentheses() -> None:
    fields = [str(n) for n in range(3, 53)]  # field n holds n, from `state` (3) on
    stat = "42 (a) b (c)) " + " ".join(fields) + "\n"
    assert secrecy.memory_blocks(stat) == ((48, 49), (50, 51))


def test_withhold_removes_the_secret_variables_and_nothing_else() -> None:
    environ = {"LIVEKIT_URL": "ws://lk", "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s"}
    secrecy.withhold(environ, secrecy.SECRET_VARIABLES)
    assert environ == {"LIVEKIT_URL": "ws://lk", "LIVEKIT_API_KEY": "key"}
