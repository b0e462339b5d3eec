"""Replay a simulated schedule from the JSON a failure printed: `python -m tests.unit.operator.sim
'<json>'`, with the operator's logs on stderr."""

from __future__ import annotations

import logging
import sys

from tests.unit.operator.sim.run import replay

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
outcome = replay(sys.argv[1])
print(outcome.summary())
for violation in outcome.violations:
    print(violation)
sys.exit(1 if outcome.violations else 0)
