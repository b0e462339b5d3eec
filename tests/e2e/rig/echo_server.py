"""A pod program for the rig's tests: answers HTTP on POD_IP and records the signals it gets.

On SIGTERM it writes `<MARK_DIR>/<HOSTNAME>.term` with the time, waits EXIT_DELAY_S seconds, then
writes `<HOSTNAME>.exit` and exits 0, so a test can see who got SIGTERM and how long it was given.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"pod": os.environ.get("HOSTNAME"), "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    host, port = os.environ["POD_IP"], int(os.environ.get("PORT", "8080"))
    marks = Path(os.environ["MARK_DIR"])
    me = os.environ["HOSTNAME"]
    delay = float(os.environ.get("EXIT_DELAY_S", "0"))
    server = ThreadingHTTPServer((host, port), Handler)

    def on_term(signum: int, frame: FrameType | None) -> None:
        (marks / f"{me}.term").write_text(str(time.time()))

        def finish() -> None:
            time.sleep(delay)
            (marks / f"{me}.exit").write_text(str(time.time()))
            os._exit(0)

        threading.Thread(target=finish, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"serving on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
    sys.exit(0)
