"""Whether the LiveKit server answers at spec.livekit.url, seen from the operator's network.

This module owns one HTTP probe per URL (ws:// is asked over http://, wss:// over https://),
its timeout and a short cache so a burst of reconciles does not flood the server. Any HTTP
answer means reachable; a refused connection, a DNS failure or a timeout does not. It is a hint
for a person, seen from the operator's network: the workers' own registration is the authority
(`status` ignores a failed probe while workers report themselves registered). It decides
nothing about conditions (that is `status`) and sends no credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

PROBE_TIMEOUT_S = 3.0
CACHE_S = 20.0


def http_url(url: str) -> str:
    """The http(s) URL the LiveKit server answers plain requests on."""
    if url.startswith("wss://"):
        return "https://" + url.removeprefix("wss://")
    if url.startswith("ws://"):
        return "http://" + url.removeprefix("ws://")
    return url


class LiveKitProbe:
    """Probes LiveKit URLs and remembers each answer for CACHE_S seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._answers: dict[str, tuple[float, str | None]] = {}

    async def error(self, url: str) -> str | None:
        """None when the server answers; else what went wrong, for a person."""
        cached = self._answers.get(url)
        if cached is not None and self._clock() - cached[0] < CACHE_S:
            return cached[1]
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
            # trust_env: HTTPS_PROXY, HTTP_PROXY and NO_PROXY as the cluster sets them; a CA
            # bundle through SSL_CERT_FILE (OpenSSL's own default)
            self._session = aiohttp.ClientSession(timeout=timeout, trust_env=True)
        try:
            async with self._session.get(http_url(url), allow_redirects=False) as response:
                await response.read()
            answer = None
        except TimeoutError:
            answer = f"no answer within {PROBE_TIMEOUT_S:g}s"
        except aiohttp.ClientError as failure:
            answer = f"{type(failure).__name__}: {failure}"
        self._answers[url] = (self._clock(), answer)
        return answer

    async def aclose(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
