"""What the operator sends the API server: JSON, and an apply patch a YAML parser takes whole."""

from __future__ import annotations

import json

import pytest
import yaml

from agentworker_operator import kube

APPLY = "application/apply-patch+yaml"
TEXTS = [
    "agent 🤖",  # beyond U+FFFF: a surrogate pair in JSON
    "a\x85b\x7f\u2028c",  # control characters a YAML parser refuses raw
    "\\ud83e\\udd16",  # a literal backslash-u text, not an escape
    "\\\\" + "🤖",  # escaped backslashes before a real pair
    "plain",
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_an_apply_patch_is_all_ascii_and_reads_back_as_sent(text: str) -> None:
    body = {"metadata": {"name": "x"}, "spec": {"agentName": text, "env": [{"value": text}]}}
    sent = kube.encode_body(body, APPLY)
    assert sent.isascii()
    assert "\\ud8" not in sent.lower() or "\\\\ud8" in sent.lower(), "no surrogate escape left"
    assert yaml.safe_load(sent) == body


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_other_bodies_are_plain_json(text: str) -> None:
    body = {"status": {"message": text}}
    sent = kube.encode_body(body, "application/merge-patch+json")
    assert sent == json.dumps(body)
    assert json.loads(sent) == body
