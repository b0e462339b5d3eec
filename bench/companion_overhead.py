"""Measurement (a): the official worker's cost with the companion, against itself without it.

Owns the two workers' commands and the order of their measurements. Both run the runtime
benchmark's livekit-agents agent (`bench/agents/official.py`, unmodified livekit-agents code)
in the official venv; the second also has the companion, installed into a directory of the run
by the command the operator's init container runs (`python -m agentworker_companion install`),
first on PYTHONPATH, with AGENTWORKER_COMPANION=1 and the AGENT_* options the operator passes.
The phases are `bench.phases`' own, alternating the two sides: starts (each then sampled for
memory, once warm), then sequential dispatches to one long-lived worker of each side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentworker_companion import ENABLE_VARIABLE
from bench import companion_report as results
from bench import phases, report, runtimes
from bench.dispatching import Dispatcher
from bench.phases import MB, BenchConfig, BenchError, Samples, note
from bench.runtimes import LiveKitServer
from bench.workers import RuntimeSpec, WorkerProcess

INSTALL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OverheadConfig:
    """How much to measure."""

    starts: int = 8
    """Measured starts per side (one more, unmeasured, warms the page cache)."""
    dispatches: int = 20
    """Sequential dispatches per side."""
    idle_processes: int = 2
    """num_idle_processes of both workers."""
    settle_s: float = 2.0
    """After a start is registered and warm, before its memory is sampled."""


def install_companion(target: Path) -> None:
    """The companion's package and sitecustomize in `target`, as the init container writes them."""
    done = subprocess.run(
        [sys.executable, "-m", "agentworker_companion", "install", str(target)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"installing the companion into {target} failed: {done.stderr.strip()}")


def build_specs(
    server: LiveKitServer, workdir: Path, python: Path, idle_processes: int, run_id: str
) -> dict[str, RuntimeSpec]:
    """The official worker of the runtime benchmark without, and with, the companion."""
    official = runtimes.build_specs(server, workdir, python, idle_processes, run_id)[
        report.OFFICIAL
    ]
    site = workdir / "companion"
    install_companion(site)
    env = {k: v for k, v in official.env.items() if k != ENABLE_VARIABLE}
    without = dataclasses.replace(
        official,
        key=results.WITHOUT,
        env=env | {"BENCH_RECORD_FILE": str(workdir / f"{results.WITHOUT}.entries")},
    )
    name = f"bench-lkc-{run_id}"
    companion = dataclasses.replace(
        official,
        key=results.WITH,
        # the companion serves /worker on AGENT_PORT and moves livekit-agents' own server to an
        # ephemeral loopback port, whatever the code asks for
        port_env="AGENT_PORT",
        env=env
        | {
            "BENCH_AGENT_NAME": name,
            "BENCH_RECORD_FILE": str(workdir / f"{results.WITH}.entries"),
            "BENCH_PORT": "0",
            ENABLE_VARIABLE: "1",
            "PYTHONPATH": f"{site}:{env['PYTHONPATH']}",
            "AGENT_NAME": name,
            "AGENT_HOST": "127.0.0.1",
            "AGENT_NUM_IDLE_PROCESSES": str(idle_processes),
            "AGENT_CONTROL_TOKEN": secrets.token_hex(16),
        },
    )
    return {without.key: without, companion.key: companion}


async def measure(
    server: LiveKitServer, python: Path, workdir: Path, cfg: OverheadConfig, run_id: str
) -> dict[str, Samples]:
    """Starts (with the memory of each), then sequential dispatches; every worker stopped."""
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    specs = build_specs(server, workdir, python, cfg.idle_processes, run_id)
    samples = {key: Samples() for key in specs}
    phase_cfg = BenchConfig(
        starts=cfg.starts,
        dispatches=cfg.dispatches,
        burst_rounds=0,
        idle_processes=cfg.idle_processes,
        memory_samples=0,  # taken once per start instead, by `probe`
    )

    async def probe(key: str, worker: WorkerProcess) -> None:
        document = await worker.status()
        if ("companion" in document) != (key == results.WITH):
            loaded = "loaded" if "companion" in document else "did not load"
            raise BenchError(f"{key}: the companion {loaded}; see {worker.log_path}")
        await asyncio.sleep(cfg.settle_s)
        memory = await asyncio.to_thread(worker.memory)
        samples[key].idle_rss_mb.append(memory.rss_bytes / MB)
        samples[key].idle_pss_mb.append(memory.pss_bytes / MB)
        samples[key].idle_breakdown = list(memory.per_process)

    async with Dispatcher(server.url, server.api_key, server.api_secret) as check:
        await check.check_server()
    note(f"overhead: {cfg.starts} measured starts each (+1 unmeasured), logs in {logs}")
    await phases.measure_starts(specs, phase_cfg, logs, samples, probe)
    note(f"overhead: {cfg.dispatches} sequential dispatches each")
    await phases.measure_running(specs, server, phase_cfg, logs, samples)
    return samples


FIGURES: tuple[tuple[str, str, str, Callable[[Samples], list[float]], str], ...] = (
    (
        "register_s", "process start -> registered", "s", lambda s: s.register_s,
        "monotonic time from exec to reading the worker's own 'registered worker' line",
    ),
    (
        "idle_rss_mb", "idle RSS of the process tree", "MB", lambda s: s.idle_rss_mb,
        "psutil RSS summed over the worker and its descendants, once per start, registered "
        "with its pool warm and no job",
    ),
    (
        "idle_pss_mb", "idle PSS of the process tree", "MB", lambda s: s.idle_pss_mb,
        "as RSS, with pages shared between processes divided among them",
    ),
    (
        "worker_ms", "job offered -> entrypoint running", "ms", lambda s: s.worker_ms,
        "the worker's own log line for the offer to the entrypoint's first time.time(): the "
        "worker's share of a dispatch (answer, assignment, hand-over to a warm process)",
    ),
    (
        "dispatch_ms", "dispatch created -> entrypoint running", "ms", lambda s: s.dispatch_ms,
        "time.time() before create_dispatch to the entrypoint's first time.time(); the server's "
        "share holds psrpc's 200 ms wait (bench/README.md)",
    ),
)  # fmt: skip
"""(key, title, unit, the samples, how it was measured) of each figure."""


def comparisons(samples: dict[str, Samples]) -> list[results.Comparison]:
    without, companion = samples[results.WITHOUT], samples[results.WITH]
    return [
        results.Comparison(
            key=key,
            title=title,
            unit=unit,
            without=taken(without),
            with_companion=taken(companion),
            how=how,
        )
        for key, title, unit, taken, how in FIGURES
    ]
