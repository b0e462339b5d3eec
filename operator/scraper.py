"""Reads every worker pod's /worker endpoint, and asks a chosen victim to retire (or not).

This module owns the HTTP side of observation: one shared aiohttp session, a bound on
concurrent requests, a timeout per request, and POST /retire (and DELETE /retire, which puts a
retired victim back in service) with the AgentWorker's control token. It only moves data: what
a worker is counts is decided in `observation`; a failure comes back as a short error text or a
refusal, never raised. It never logs the token.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Mapping, Sequence, Set
from typing import Any

import aiohttp

from agentworker_operator import observation

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_CONCURRENCY = 100
MAX_DOCUMENT_BYTES = 256 * 1024


class RetireAnswer(enum.StrEnum):
    """What a worker said to POST /retire."""

    ACCEPTED = "accepted"
    """It holds no job and takes none from now on."""
    BUSY = "busy"
    """It holds (or is about to start) a job: pick another."""
    FAILED = "failed"
    """No answer, refused credentials, or no such endpoint: leave it alone."""


class Scraper:
    """Concurrent, bounded, time-limited HTTP to worker pods; `aclose()` when done."""

    def __init__(
        self,
        *,
        port: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0)  # the semaphore bounds it
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        """Close the session; safe to call twice."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def fetch(self, ip: str) -> tuple[object, str]:
        """(decoded /worker JSON, "") or (None, why not)."""
        if not ip:
            return None, "no pod IP yet"
        async with self._limit:
            try:
                url = f"http://{ip}:{self._port}/worker"
                async with self._client().get(url, allow_redirects=False) as response:
                    if response.status != 200:
                        return None, f"HTTP {response.status}"
                    body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
            except TimeoutError:
                return None, f"no answer within {self._timeout.total:g}s"
            except aiohttp.ClientError as failure:
                return None, type(failure).__name__
        if len(body) > MAX_DOCUMENT_BYTES:
            return None, "document too large"
        try:
            return json.loads(body), ""
        except ValueError:
            return None, "not JSON"

    async def read(self, ips: Sequence[str]) -> dict[str, tuple[object, str]]:
        """`fetch` of each address, all concurrently: (document, error) by IP."""
        answers = await asyncio.gather(*(self.fetch(ip) for ip in ips))
        return dict(zip(ips, answers, strict=True))

    async def observe(
        self,
        pods: Sequence[Mapping[str, Any]],
        *,
        load_threshold: float,
        reported_before: Set[str] = frozenset(),
    ) -> list[observation.Worker]:
        """Every pod's Worker, all read concurrently (`reported_before`: pod names)."""
        workers, _ = await self.observe_answers(
            pods, load_threshold=load_threshold, reported_before=reported_before
        )
        return workers

    async def observe_answers(
        self,
        pods: Sequence[Mapping[str, Any]],
        *,
        load_threshold: float,
        reported_before: Set[str] = frozenset(),
        known: Mapping[str, tuple[object, str]] | None = None,
    ) -> tuple[list[observation.Worker], dict[str, tuple[object, str]]]:
        """Every pod's Worker, and each answer (document, error) by pod IP; the pods whose IP
        is in `known` are not read: that answer stands for theirs."""
        known = known or {}
        ips = [str((pod.get("status") or {}).get("podIP") or "") for pod in pods]

        fetched = await self.read([ip for ip in dict.fromkeys(ips) if ip not in known])
        answers = [known[ip] if ip in known else fetched[ip] for ip in ips]
        workers = [
            observation.observe(
                pod,
                document,
                error,
                load_threshold=load_threshold,
                reported_before=str((pod.get("metadata") or {}).get("name")) in reported_before,
            )
            for pod, (document, error) in zip(pods, answers, strict=True)
        ]
        return workers, {ip: a for ip, a in zip(ips, answers, strict=True) if ip}

    async def retire(self, ip: str, token: str) -> RetireAnswer:
        """Ask the worker at ip to retire (the victim handshake)."""
        status = await self._handshake("POST", ip, token)
        if status == 200:
            return RetireAnswer.ACCEPTED
        return RetireAnswer.BUSY if status == 409 else RetireAnswer.FAILED

    async def unretire(self, ip: str, token: str) -> bool:
        """Put a worker retired by `retire` back in service; True only when it serves again.

        False when it did not answer, refused the token, or is draining already (409).
        """
        return await self._handshake("DELETE", ip, token) == 200

    async def _handshake(self, method: str, ip: str, token: str) -> int | None:
        """/retire at ip with the control token: the HTTP status, or None without an answer."""
        if not ip or not token:
            return None
        url = f"http://{ip}:{self._port}/retire"
        headers = {"Authorization": f"Bearer {token}"}
        async with self._limit:
            try:
                async with self._client().request(method, url, headers=headers) as response:
                    await response.read()
                    return response.status
            except (TimeoutError, aiohttp.ClientError):
                return None
