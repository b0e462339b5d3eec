"""Arms the companion when an interpreter starts from the installed distribution's
`agentworker_companion.pth`, whose one line calls `arm` only when AGENTWORKER_COMPANION=1.

A .pth line that raises makes `site` print a traceback in every interpreter the pod starts and
skip the rest of that file, so `arm` never raises, and this module imports nothing at its top
that could fail. Arming is `boot.activate()`, which arms once per interpreter: an image that
has the companion installed and also gets it injected (PYTHONPATH and the injected
`sitecustomize`) arms it once.
"""

import sys


def arm(origin: str) -> None:
    """Arm the companion's import hook; a failure is one line on stderr naming `origin`."""
    try:
        from agentworker_companion import boot

        boot.activate()
    except Exception as error:  # never break the interpreter it was loaded into
        sys.stderr.write(f"agentworker-companion: not loaded from {origin}: {error!r}\n")
