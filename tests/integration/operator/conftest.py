"""Fixtures for the operator's integration tier: the rig's API server, a fresh namespace.

The rig fixtures are the e2e tier's own (one definition of a namespace, of kubectl).
"""

from __future__ import annotations

from tests.e2e.conftest import api_client, core, kubectl, namespace, rig
from tests.e2e.operator.conftest import crd, credentials

__all__ = ["api_client", "core", "crd", "credentials", "kubectl", "namespace", "rig"]
