"""`python -m tests.rig up|down|restart-runner`: the Makefile's `rig` and `rig-down`, and more.

- `up` starts the rig, or only the runner when it is the one component down.
- `down` stops exactly what `up` started.
- `restart-runner` restarts the process runner alone, e.g. after a change to tests/rig/: the
  pods' processes keep running and the new runner adopts them (tests/rig/adoption.py); the
  control plane, LiveKit and every object stay.
"""

from __future__ import annotations

import sys

from tests.rig import control_plane


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "up"
    try:
        if command == "up":
            control_plane.up()
        elif command == "down":
            control_plane.down()
        elif command == "restart-runner":
            control_plane.restart_runner()
        else:
            print("usage: python -m tests.rig up|down|restart-runner", file=sys.stderr)
            return 2
    except control_plane.RigError as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
