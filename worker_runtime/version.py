"""The runtime's version: that of the installed `agentworker` distribution, whose one source is
pyproject.toml's `version`. It is reported to LiveKit at registration and on /worker, and
printed by `agent-worker --version`. The runtime runs installed (an image's venv, or
`pip install -e .`): a source tree that was never installed fails here, at import."""

from importlib import metadata

DISTRIBUTION = "agentworker"
"""The distribution that ships the runtime and the operator (pyproject.toml's `name`)."""

__version__ = metadata.version(DISTRIBUTION)
