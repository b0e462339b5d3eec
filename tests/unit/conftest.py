"""The unit tier stays fast: every test gets a 2 s time limit unless it sets its own.

A module or test that needs longer says so with `pytest.mark.timeout(...)` and a reason (the
hypothesis properties do); everything else is limited here, so a new module cannot forget it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_LIMIT_S = 2
UNIT_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each unit test without a timeout mark the tier's limit (other tiers untouched)."""
    for item in items:
        if item.path.is_relative_to(UNIT_DIR) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_LIMIT_S))
