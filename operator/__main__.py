"""`agent-operator`: the operator process (flags, logs, health, metrics, leader election, kopf).

This module owns wiring only: it parses the command line into `settings.Settings`, sets up JSON
logs, serves /healthz and /readyz, starts the metrics endpoint and LiveKit's webhook endpoint
(with --webhook-port), waits for the leader Lease (with --shards N, for one of the N shards'
Leases) and runs kopf with the handlers, for that shard's AgentWorkers, until SIGTERM/SIGINT or
until the Lease is lost (then it exits 1 so the pod restarts as a standby). It makes no decision
about AgentWorkers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence

import aiohttp
import kopf
from aiohttp import web

from agentworker_operator import (
    builders,
    handlers,
    kube,
    lease,
    logs,
    metrics,
    settings,
    sharding,
    version,
    webhooks,
)

logger = logging.getLogger("agentworker_operator")


def _own_pod() -> settings.PodRef | None:
    """This replica's pod, from the downward API (the chart sets both); None outside a pod."""
    name, namespace = os.environ.get("POD_NAME", ""), os.environ.get("POD_NAMESPACE", "")
    return settings.PodRef(namespace=namespace, name=name) if name and namespace else None


def _default_identity() -> str:
    pod = os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def parse_args(argv: Sequence[str] | None = None) -> settings.Settings:
    """Settings from the command line (and POD_NAME / POD_NAMESPACE from the downward API)."""
    parser = argparse.ArgumentParser(
        prog="agent-operator", description="Reconcile AgentWorkers into fleets of agent workers."
    )
    add = parser.add_argument
    add("--version", action="version", version=f"%(prog)s {version.__version__}")
    add(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    add("--health-host", default="0.0.0.0", help="address of /healthz and /readyz")
    add("--health-port", type=int, default=8080, help="port of /healthz and /readyz (0: off)")
    add("--metrics-host", default="0.0.0.0", help="address of /metrics")
    add("--metrics-port", type=int, default=9090, help="port of /metrics (0: off)")
    add("--webhook-host", default="0.0.0.0", help="address of POST /livekit/webhook")
    add(
        "--webhook-port",
        type=int,
        default=0,
        help="port of LiveKit's webhooks, POST /livekit/webhook (default 0: off)",
    )
    add("--log-format", choices=[f.value for f in settings.LogFormat], default="json")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add("--lease-name", default="agentworker-operator", help="name of the leader Lease")
    add(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader Lease (default: $POD_NAMESPACE or default)",
    )
    add(
        "--identity",
        default=_default_identity(),
        help="holder identity in the Lease (default: $POD_NAME, else host and a random id)",
    )
    add("--lease-duration", type=float, default=15.0, help="seconds a Lease claim lasts")
    add(
        "--shards",
        type=int,
        default=1,
        metavar="N",
        help="split the AgentWorkers among N processes, each holding one of the Leases "
        "<lease-name>-shard-0 to -<N-1> and handling that shard's AgentWorkers (default 1: one "
        "Lease, <lease-name>, and its holder handles every AgentWorker)",
    )
    add(
        "--control-key-secret",
        default=settings.CONTROL_KEY_NAME,
        metavar="NAME",
        help="Secret in the --lease-namespace holding the key every AgentWorker's control token "
        "is derived from (made when missing)",
    )
    add(
        "--sync-period",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between observations of the workers (and autoscaling decisions)",
    )
    add(
        "--no-worker-watch",
        dest="worker_watch",
        action="store_false",
        help="do not long-poll the workers' /worker for changes: read them every sync period only",
    )
    add(
        "--resync-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between whole reconciles of each AgentWorker",
    )
    add(
        "--scrape-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds a worker's /worker may take before it counts as unknown",
    )
    add(
        "--companion-image",
        default=settings.DEFAULT_COMPANION_IMAGE,
        metavar="IMAGE",
        help="image of the init container that copies the companion into `command` fleets' pods "
        "(an image with python and the agentworker_companion package: the operator's own; "
        f"default {settings.DEFAULT_COMPANION_IMAGE})",
    )
    args = parser.parse_args(argv)
    if args.sync_period <= 0 or args.resync_period <= 0 or args.scrape_timeout <= 0:
        parser.error("--sync-period, --resync-period and --scrape-timeout must be above 0")
    if args.shards < 1:
        parser.error(f"--shards {args.shards}: there must be 1 shard or more")
    if args.webhook_port and args.webhook_port in (args.health_port, args.metrics_port):
        parser.error(f"--webhook-port {args.webhook_port} is taken by health or metrics")
    return settings.Settings(
        namespaces=tuple(args.namespace),
        health_host=args.health_host,
        health_port=args.health_port,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        log_format=settings.LogFormat(args.log_format),
        log_level=args.log_level,
        lease=settings.LeaseSettings(
            name=args.lease_name,
            namespace=args.lease_namespace,
            identity=args.identity,
            duration_s=args.lease_duration,
            renew_every_s=max(1.0, args.lease_duration / 3),
        ),
        pod=_own_pod(),
        shards=args.shards,
        control_key=settings.SecretRef(
            namespace=args.lease_namespace, name=args.control_key_secret
        ),
        sync=settings.SyncSettings(
            interval_s=args.sync_period,
            resync_s=args.resync_period,
            scrape_timeout_s=args.scrape_timeout,
            watch_workers=args.worker_watch,
        ),
        companion_image=args.companion_image,
    )


def configure_logging(config: settings.Settings) -> None:
    """JSON lines with the runtime's fields (or kopf's text) on stderr, each naming its
    AgentWorker when there is one."""
    json_lines = config.log_format is settings.LogFormat.JSON
    kopf.configure(log_format=kopf.LogFormat.FULL, log_prefix=not json_lines)
    root = logging.getLogger()
    if json_lines:
        for handler in root.handlers:
            handler.setFormatter(logs.JsonFormatter())
    root.setLevel(config.log_level)


async def _serve_health(
    config: settings.Settings,
    ready: asyncio.Event,
    leading: asyncio.Event,
    elector: lease.ShardLeases,
) -> web.AppRunner | None:
    """/healthz: the event loop answers. /readyz: kopf runs (leader), or the standby can read
    the Lease and waits for it (a standby refused by the API server is not ready); with
    --shards above 1 it says which shard this process holds (null while it stands by)."""
    if not config.health_port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": leading.is_set()})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready.is_set() if leading.is_set() else elector.reachable
        answer: dict[str, object] = {
            "ready": ok,
            "leader": leading.is_set(),
            "holder": elector.holder,
        }
        if config.shards > 1:
            answer["shard"] = elector.shard.index if elector.shard is not None else None
        return web.json_response(answer, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.health_host, config.health_port).start()
    return runner


async def _serve_webhooks(
    config: settings.Settings,
    secrets: webhooks.Secrets,
    on_event: Callable[[webhooks.WebhookEvent], None],
    serving: Callable[[], bool],
) -> web.AppRunner | None:
    """LiveKit's webhooks on every replica, when --webhook-port is set: the chart's Service
    picks the Lease holders (`_label_holder`); a standby answers 503 (`serving`)."""
    if not config.webhook_port:
        return None
    return await webhooks.serve_webhooks(
        config.webhook_host, config.webhook_port, secrets, on_event, serving=serving
    )


async def _run_kopf(
    config: settings.Settings,
    client: kube.Kube,
    stop: asyncio.Event,
    ready: asyncio.Event,
    inbox: webhooks.Inbox,
    shard: sharding.Shard,
) -> None:
    await kopf.operator(
        registry=handlers.registry,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,
        stop_flag=stop,
        ready_flag=ready,
        memo=kopf.Memo(
            kube=client,
            sync_settings=config.sync,
            control_key_secret=config.control_key,
            companion_image=config.companion_image,
            webhook_inbox=inbox,
            shard=shard,
        ),
    )


LABEL_TIMEOUT_S = 5.0


async def _label_holder(client: kube.Kube, pod: settings.PodRef | None, *, holding: bool) -> None:
    """Put `builders.LEASE_HOLDER_LABEL` on this replica's pod while it holds a Lease, take it
    off otherwise: the chart's webhook Service selects it. A refusal (RBAC without the pod
    patch) is logged; the webhooks then reach the standbys too, which answer 503."""
    if pod is None:
        return
    labels = {builders.LEASE_HOLDER_LABEL: "true" if holding else None}
    try:
        await asyncio.wait_for(
            client.request(
                "PATCH",
                kube.path_of("v1", "Pod", pod.namespace, pod.name),
                body={"metadata": {"labels": labels}},
                content_type="application/merge-patch+json",
            ),
            LABEL_TIMEOUT_S,
        )
    except (kube.KubeError, aiohttp.ClientError, TimeoutError) as error:
        logger.warning(
            "could not label this pod as the lease holder"
            if holding
            else "could not take the lease holder's label off this pod",
            extra={"pod": pod.name, "error": str(error)},
        )


async def run(config: settings.Settings, *, started: float) -> int:
    """The process: health, metrics, a Lease (its shard's), then kopf; the exit code."""
    stop, ready, leading = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = kube.Kube.connect()
    # the Lease gets connections of its own: behind a burst of reconciles on the shared client's
    # 16 its renewal would queue past the renew deadline, and the operator would stop itself
    lease_client = kube.Kube.connect()
    elector = lease.ShardLeases(lease_client, config.lease, shards=config.shards)
    health = await _serve_health(config, ready, leading, elector)
    inbox = webhooks.Inbox()
    hooks = await _serve_webhooks(config, inbox.secret, inbox.deliver, lambda: inbox.attached)
    if config.metrics_port:
        metrics.serve(config.metrics_host, config.metrics_port)
    pod = config.pod if config.webhook_port else None  # the label is for the webhooks' Service
    try:
        # a label left by this pod's previous container (killed while holding) comes off first
        await _label_holder(client, pod, holding=False)
        if not await elector.acquire(stop):
            return 0
        shard = elector.shard or sharding.WHOLE
        leading.set()
        await _label_holder(client, pod, holding=True)
        metrics.LEADER.set(1)
        if config.shards > 1:
            metrics.SHARD.labels(str(shard.index)).set(1)
        operator = asyncio.create_task(
            _run_kopf(config, client, stop, ready, inbox, shard), name="kopf"
        )
        holder = asyncio.create_task(elector.hold(), name="leader-lease")
        waiter = asyncio.create_task(ready.wait(), name="ready-log")
        waiter.add_done_callback(
            lambda _: logger.info("operator ready", extra={"startup_s": time.monotonic() - started})
        )
        done, _ = await asyncio.wait({operator, holder}, return_when=asyncio.FIRST_COMPLETED)
        lost = holder in done
        stop.set()
        holder.cancel()
        waiter.cancel()
        await asyncio.gather(operator, holder, waiter, return_exceptions=True)
        failed = not operator.cancelled() and operator.exception() is not None
        if failed:
            logger.error("kopf stopped with an error", exc_info=operator.exception())
        return 1 if lost or failed else 0
    finally:
        metrics.LEADER.set(0)
        if config.shards > 1 and elector.shard is not None:
            metrics.SHARD.labels(str(elector.shard.index)).set(0)
        await elector.release()
        if leading.is_set():
            await _label_holder(client, pod, holding=False)
        if hooks is not None:
            await hooks.cleanup()
        if health is not None:
            await health.cleanup()
        await client.aclose()
        await lease_client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    started = time.monotonic()
    config = parse_args(argv)
    configure_logging(config)
    logger.info(
        "operator starting",
        extra={
            "namespaces": list(config.namespaces) or "all",
            "identity": config.lease.identity,
            "shards": config.shards,
        },
    )
    return asyncio.run(run(config, started=started))


if __name__ == "__main__":
    sys.exit(main())
