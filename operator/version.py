"""The operator's version: that of the installed `agentworker` distribution, whose one source is
pyproject.toml's `version`. `agent-operator --version` prints it, and it is the tag of the
default companion image (`builders.DEFAULT_COMPANION_IMAGE`). Like the runtime, which reads the
same distribution's version in `worker_runtime.version` (the operator never imports the
runtime), it fails at import in a source tree that was never installed.
"""

from importlib import metadata

DISTRIBUTION = "agentworker"
"""The distribution that ships the operator and the runtime (pyproject.toml's `name`)."""

__version__ = metadata.version(DISTRIBUTION)
