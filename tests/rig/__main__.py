"""`python -m tests.rig up|down`: the Makefile's `rig` and `rig-down`."""

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
        else:
            print("usage: python -m tests.rig up|down", file=sys.stderr)
            return 2
    except control_plane.RigError as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
