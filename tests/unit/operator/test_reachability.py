"""The LiveKit probe asks the server's plain HTTP side of its WebSocket URL."""

from __future__ import annotations

import pytest

from agentworker_operator import reachability

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:7880", "http://127.0.0.1:7880"),
        ("wss://lk.example.com/", "https://lk.example.com/"),
    ],
    ids=["ws", "wss"],
)
def test_http_url(url: str, expected: str) -> None:
    assert reachability.http_url(url) == expected
