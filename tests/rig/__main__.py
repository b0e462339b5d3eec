"""`python -m tests.rig up|down|restart-runner|restart NAME`: the Makefile's `rig` and `rig-down`,
and more.

- `up` starts the rig, or only the runner when it is the one component down.
- `down` stops exactly what `up` started.
- `restart-runner` restarts the process runner alone, e.g. after a change to tests/rig/: the
  pods' processes keep running and the new runner adopts them (tests/rig/adoption.py); the
  control plane, LiveKit and every object stay.
- `restart kube-apiserver|livekit` stops one component and starts it again on the same ports
  (the fault tests do it from Python with `control_plane.restart`).
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
        elif command == "restart" and len(argv) > 2:
            down_s = control_plane.restart(argv[2])
            print(f"{argv[2]} restarted, down {down_s:.1f}s")
        else:
            print("usage: python -m tests.rig up|down|restart-runner|restart NAME", file=sys.stderr)
            return 2
    except control_plane.RigError as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
