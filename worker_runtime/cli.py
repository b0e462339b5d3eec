"""The command line: `cli.run_app(opts or server)` for agent files, `agent-worker` for targets.

Owns argument parsing, where options come from (WorkerOptions or an AgentServer, then
AGENT_*/LIVEKIT_*/POD_IP variables, then flags), the log format (`start`: JSON lines, `dev`:
coloured), the signal handlers and the exit code: 0 after a drain, 1 when LiveKit cannot be
reached or the port is taken, 2 for invalid options. Secrets are never printed. It imports the
worker (and aiohttp) only when it runs one, because agent files import `cli` and every job
process imports the agent file.

`download-files`, an image build step, imports the agent's module (so that the livekit-agents
plugins it imports register) and calls each registered plugin's `download_files()`, then the
module's own `download_files()` if it has one: exit 0, 1 when one of them fails, 2 for a bad
target.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, cast

from worker_runtime import logs, secrecy
from worker_runtime.options import (
    InvalidOption,
    WorkerOptions,
    apply_overrides,
    options_from_env,
    parse_log_level,
)
from worker_runtime.server import AgentServer, server_of
from worker_runtime.version import __version__

if TYPE_CHECKING:
    from worker_runtime.worker import Worker

logger = logging.getLogger("worker_runtime")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"
    )
    parser.add_argument("--url", help="LiveKit server URL (default: $LIVEKIT_URL)")
    parser.add_argument("--api-key", help="LiveKit API key (default: $LIVEKIT_API_KEY)")
    parser.add_argument("--api-secret", help="LiveKit API secret (default: $LIVEKIT_API_SECRET)")


# Flags that take a value. `--flag VALUE` is read as `--flag=VALUE` before argparse sees it:
# argparse takes a VALUE that starts with "-" (as a token_urlsafe secret may) for another flag
# and refuses the command line, where click, which livekit-agents uses, takes it as the value.
VALUE_FLAGS = frozenset(
    {"--log-level", "--url", "--api-key", "--api-secret", "--prewarm", "--request"}
)


def join_flag_values(argv: Sequence[str]) -> list[str]:
    """`argv` with each `--flag VALUE` of `VALUE_FLAGS` as one `--flag=VALUE` (not after `--`)."""
    joined: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return [*joined, arg, *args]
        value = next(args, None) if arg in VALUE_FLAGS else None
        joined.append(arg if value is None else f"{arg}={value}")
    return joined


def parse_args(argv: Sequence[str] | None, *, with_target: bool) -> argparse.Namespace:
    """The command line (default: `sys.argv[1:]`) as `build_parser` reads it."""
    return build_parser(with_target).parse_args(
        join_flag_values(sys.argv[1:] if argv is None else argv)
    )


def build_parser(with_target: bool) -> argparse.ArgumentParser:
    """`start`/`dev` with the common flags; `agent-worker` also takes the target."""
    prog = "agent-worker" if with_target else None
    parser = argparse.ArgumentParser(prog=prog, description="Run a LiveKit agent worker.")
    if with_target:  # the runtime's own command; an agent file's (run_app) is the agent's
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("start", "production: JSON logs"), ("dev", "development: coloured logs")):
        sub = commands.add_parser(name, help=text)
        _add_common(sub)
        if with_target:
            sub.add_argument(
                "target", help="module:function (the entrypoint), module:options or module:server"
            )
            sub.add_argument("--prewarm", help="module:function run once in each job process")
            sub.add_argument("--request", help="module:function deciding on each job offer")
    download = commands.add_parser(
        "download-files", help="fetch the files the agent's plugins need (an image build step)"
    )
    download.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"
    )
    if with_target:
        download.add_argument("target", help="module:function (the entrypoint); imports its module")
    return parser


def import_target(spec: str) -> object:
    """The object `module:attribute` names; `InvalidOption` saying what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidOption(f"target: {spec!r} is not module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidOption(f"target: cannot import {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidOption(f"target: {module_name!r} has no {attr!r}") from None


def import_callable(spec: str) -> Callable[..., Any]:
    """Like `import_target`, for a function."""
    target = import_target(spec)
    if not callable(target):
        raise InvalidOption(f"{spec}: {target!r} is not callable")
    return cast(Callable[..., Any], target)


def options_of(target: object) -> WorkerOptions:
    """The options a target stands for: WorkerOptions, an AgentServer's, or those of the
    AgentServer that registered the entrypoint (its options must not be lost), or defaults."""
    if isinstance(target, WorkerOptions):
        return target
    server = target if isinstance(target, AgentServer) else server_of(target)
    if server is not None:
        return server.worker_options()
    return WorkerOptions(target)  # type: ignore[arg-type]  # validated by WorkerOptions


def options_from_target(args: argparse.Namespace) -> WorkerOptions:
    """WorkerOptions from the target (an entrypoint, options or a server) and the flags."""
    opts = options_of(import_target(args.target))
    if args.prewarm:
        opts = replace(opts, prewarm_fnc=import_callable(args.prewarm))
    if args.request:
        opts = replace(opts, request_fnc=import_callable(args.request))
    return opts


def resolve_options(opts: WorkerOptions, args: argparse.Namespace) -> WorkerOptions:
    """`opts`, then the AGENT_*/LIVEKIT_*/POD_IP variables, then the flags; credentials required."""
    opts = apply_overrides(opts, options_from_env(os.environ))
    flags = {"ws_url": args.url, "api_key": args.api_key, "api_secret": args.api_secret}
    opts = replace(opts, **{k: v for k, v in flags.items() if v})
    for value, var in (
        (opts.ws_url, "LIVEKIT_URL"),
        (opts.api_key, "LIVEKIT_API_KEY"),
        (opts.api_secret, "LIVEKIT_API_SECRET"),
    ):
        if not value:
            raise InvalidOption(f"{var} is not set (or pass the matching flag)")
    return opts


async def _serve(worker: Worker, *, dev: bool) -> int:
    from worker_runtime.connection import ConnectionFailed
    from worker_runtime.http_api import PortInUse

    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if dev and interrupts > 1:
            logger.warning("second SIGINT in dev mode, exiting now")
            os._exit(EXIT_FAILED)
        worker.drain()

    loop.add_signal_handler(signal.SIGTERM, worker.drain)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        await worker.run()
    except ConnectionFailed as exc:
        logger.error("giving up on LiveKit", extra={"error": str(exc)})
        return EXIT_FAILED
    except PortInUse as exc:
        logger.error("cannot start the HTTP server", extra={"error": str(exc)})
        return EXIT_FAILED
    except Exception:
        logger.exception("the worker failed")
        return EXIT_FAILED
    return EXIT_OK


class DownloadFailed(Exception):
    """A `download_files()` raised; the message names which one, the cause is chained."""


class Plugin(Protocol):
    """What `download-files` uses of a livekit-agents plugin (`livekit.agents.Plugin`)."""

    def download_files(self) -> None: ...


def registered_plugins() -> list[Plugin]:
    """livekit-agents' registered plugins; none when livekit-agents is not installed."""
    try:
        from livekit.agents import Plugin as AgentsPlugin
    except ModuleNotFoundError as exc:
        if exc.name not in ("livekit", "livekit.agents"):
            raise  # livekit-agents is installed but broken: say so
        return []
    return list(cast(list[Plugin], AgentsPlugin.registered_plugins))


def download_files(module: ModuleType) -> int:
    """Call each registered plugin's `download_files()`, then `module`'s own; return how many."""
    steps: list[tuple[str, Callable[[], object]]] = [
        (f"plugin {getattr(plugin, 'package', type(plugin).__name__)}", plugin.download_files)
        for plugin in registered_plugins()
    ]
    own = getattr(module, "download_files", None)
    if own is not None:
        if not callable(own):
            raise DownloadFailed(f"{module.__name__}.download_files is not a function")
        steps.append((f"{module.__name__}.download_files()", own))
    for name, step in steps:
        logger.info("downloading files", extra={"step": name})
        try:
            result = step()
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except Exception as exc:
            raise DownloadFailed(f"{name} failed: {type(exc).__name__}: {exc}") from exc
    return len(steps)


def _download(module: ModuleType, log_level: str | None) -> int:
    logs.configure("dev", "INFO")
    try:
        raw_level = log_level or os.environ.get("AGENT_LOG_LEVEL") or "INFO"
        name = "--log-level" if log_level else "AGENT_LOG_LEVEL"
        logs.configure("dev", parse_log_level(raw_level, name))
    except InvalidOption as exc:
        logger.error("invalid options", extra={"error": str(exc)})
        return EXIT_USAGE
    try:
        count = download_files(module)
    except DownloadFailed as exc:
        logger.exception("downloading files failed", extra={"error": str(exc)})
        return EXIT_FAILED
    logger.info("files downloaded", extra={"agent_module": module.__name__, "steps": count})
    return EXIT_OK


def _kill_leftover_processes() -> None:
    """Job processes must not outlive the worker (multiprocessing would wait for them)."""
    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=5)


def _run(opts: WorkerOptions, args: argparse.Namespace) -> int:
    dev = args.command == "dev"
    fmt: logs.LogFormat = "dev" if dev else "json"
    logs.configure(fmt, "INFO")
    try:
        opts = resolve_options(opts, args)
        # the flag wins over AGENT_LOG_LEVEL, which resolve_options put over the code's level
        level = parse_log_level(args.log_level or opts.log_level)
        logs.configure(fmt, level)
    except InvalidOption as exc:
        logger.error("invalid options", extra={"error": str(exc)})
        return EXIT_USAGE
    token = os.environ.get("AGENT_CONTROL_TOKEN", "")
    # before the fork server starts: job code must not be able to mint tokens or retire us
    if not secrecy.seal([opts.api_secret, token]):
        logger.warning(
            "job processes may be able to read the worker's memory (/proc, ptrace)",
            extra={"platform": sys.platform},
        )
    logger.info(
        "starting worker",
        extra={
            "agent_name": opts.agent_name,
            "url": opts.ws_url,
            "worker_type": opts.worker_type.name,
        },
    )
    try:
        return asyncio.run(_serve_new(opts, fmt, level, dev, token))
    finally:
        _kill_leftover_processes()


async def _serve_new(
    opts: WorkerOptions, fmt: logs.LogFormat, level: str, dev: bool, token: str
) -> int:
    from worker_runtime.worker import Worker  # here, so that job processes never load aiohttp

    worker = Worker(opts, log_format=fmt, log_level=level, control_token=token)
    server = server_of(opts.entrypoint_fnc)
    if server is not None:
        server.attach(worker)  # its active_jobs are the worker's, as in livekit-agents
    return await _serve(worker, dev=dev)


def run_app(app: WorkerOptions | AgentServer, argv: Sequence[str] | None = None) -> NoReturn:
    """Parse `start`/`dev` and the flags, run the worker, exit with its code; or, for
    `download-files`, fetch the files of the plugins and of the entrypoint's module."""
    args = parse_args(argv, with_target=False)
    try:
        opts = options_of(app)
    except InvalidOption as exc:
        print(f"{os.path.basename(sys.argv[0])}: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args.command == "download-files":
        module_name = getattr(opts.entrypoint_fnc, "__module__", None) or "__main__"
        sys.exit(_download(sys.modules.get(module_name, sys.modules["__main__"]), args.log_level))
    sys.exit(_run(opts, args))


def main(argv: Sequence[str] | None = None) -> int:
    """`agent-worker start|dev|download-files module:function`; the cwd is importable."""
    sys.path.insert(0, os.getcwd())
    args = parse_args(argv, with_target=True)
    try:
        if args.command == "download-files":
            import_target(args.target)  # the entrypoint must exist, as `start` will want it
            module = sys.modules[args.target.partition(":")[0]]
            return _download(module, args.log_level)
        opts = options_from_target(args)
    except InvalidOption as exc:
        print(f"agent-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run(opts, args)


if __name__ == "__main__":
    sys.exit(main())
