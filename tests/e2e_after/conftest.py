"""Fixtures for the checks that run after the whole e2e suite: the e2e tier's own rig fixtures."""

from __future__ import annotations

from tests.e2e.conftest import api_client, core, kubectl, namespace, rig

__all__ = ["api_client", "core", "kubectl", "namespace", "rig"]
