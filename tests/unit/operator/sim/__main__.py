"""Replay a simulated schedule, or draw more of them than the unit tier does.

`python -m tests.unit.operator.sim '<json>'` replays the schedule a failure printed, with the
operator's logs on stderr; `python -m tests.unit.operator.sim --draw 5000 --seed 7 --guarded`
runs 5000 drawn schedules (only guarded ones with --guarded), shrinks the first failure and
prints its replay command.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tests.unit.operator.sim import draw
from tests.unit.operator.sim.run import replay

parser = argparse.ArgumentParser(
    prog="python -m tests.unit.operator.sim", description=__doc__.splitlines()[0]
)
parser.add_argument("schedule", nargs="?", help="a schedule's JSON, as a failure printed it")
parser.add_argument("--draw", type=int, metavar="N", help="run N drawn schedules instead")
parser.add_argument("--seed", type=int, default=0, help="hypothesis' seed for --draw (0)")
parser.add_argument(
    "--guarded", action="store_true", help="with --draw: only schedules with the dispatch guard"
)
args = parser.parse_args()
if args.draw:
    draw.explore(args.draw, seed=args.seed, only_guarded=args.guarded)
    print(f"{args.draw} drawn schedules kept every promise")
    sys.exit(0)
if not args.schedule:
    parser.error("give a schedule's JSON, or --draw N")
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
outcome = replay(args.schedule)
print(outcome.summary())
for violation in outcome.violations:
    print(violation)
sys.exit(1 if outcome.violations else 0)
