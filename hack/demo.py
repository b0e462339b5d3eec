"""`make demo`: an AgentWorker fleet on the rig, taking a real call, then one that autoscales.

Run through the Makefile, which starts the rig and exports `.rig/env` first. Steps: install the
CRD, start the operator, apply examples/agentworker.yaml (pointed at the rig's LiveKit server),
wait for Ready, then join a room as a caller and dispatch the agent into it: the agent's greeting
arrives over the room's data channel. Then apply examples/agentworker-autoscaled.yaml, send it
calls and watch `kubectl get aw` as the operator adds workers, and removes them again (idle ones
only) once the calls end. The fleets keep running afterwards; `make rig-down` ends them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from livekit import api as lkapi
from livekit import rtc

from tests.rig import control_plane
from tests.rig import env as rig_env

NAMESPACE = "demo"
AGENT = "basic-agent"
EXAMPLE = rig_env.REPO_ROOT / "examples" / "agentworker.yaml"
CRD = rig_env.REPO_ROOT / "crds" / "agentworker.dev_agentworkers.yaml"


def kubectl(*args: str, stdin: str | None = None, echo: bool = True) -> str:
    if echo:
        print(f"\n$ kubectl {' '.join(args)}", flush=True)
    done = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    if echo:
        print(done.stdout, end="", flush=True)
    return done.stdout


def ensure_operator() -> None:
    if control_plane.read_pid("demo-operator") is None:
        control_plane.spawn(
            "demo-operator",
            [
                str(Path(sys.executable).parent / "agent-operator"),
                "--log-format=text",
                f"--namespace={NAMESPACE}",
                "--health-port=0",
                "--metrics-port=0",
            ],
            env=dict(os.environ),
        )
    print(
        f"operator running (pid {control_plane.read_pid('demo-operator')}, "
        f"log {control_plane.LOGS / 'demo-operator.log'})"
    )


def apply_fleet(rig: rig_env.RigEnv) -> None:
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/agentworkers.agentworker.dev")
    existing = kubectl("get", "ns", "-o", "name", echo=False).split()
    if f"namespace/{NAMESPACE}" not in existing:
        kubectl("create", "namespace", NAMESPACE)
    secret = kubectl(
        "create",
        "secret",
        "generic",
        "livekit-credentials",
        "-n",
        NAMESPACE,
        f"--from-literal=LIVEKIT_API_KEY={rig.livekit_api_key}",
        f"--from-literal=LIVEKIT_API_SECRET={rig.livekit_api_secret}",
        "--dry-run=client",
        "-o",
        "json",
        echo=False,
    )
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=secret, echo=False)
    print("\n(secret livekit-credentials holds the rig's key and secret; never shown)")
    manifest = EXAMPLE.read_text().replace("ws://127.0.0.1:7880", rig.livekit_url)
    print(
        f"\n$ kubectl apply -n {NAMESPACE} -f examples/agentworker.yaml   "
        f"# livekit.url -> {rig.livekit_url}"
    )
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=manifest, echo=False)


def wait_ready(timeout_s: float = 180.0, name: str = AGENT) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        raw = kubectl("get", "aw", name, "-n", NAMESPACE, "-o", "json", echo=False)
        conditions: list[dict[str, Any]] = json.loads(raw).get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return time.monotonic() - started
        time.sleep(1)
    kubectl("describe", "aw", name, "-n", NAMESPACE)
    raise SystemExit(f"AgentWorker {name} not Ready after {timeout_s:.0f}s")


async def take_a_call(rig: rig_env.RigEnv) -> str:
    """Join a room as a caller, dispatch the agent into it, and wait for its greeting."""
    http_url = rig.livekit_url.replace("ws://", "http://")
    room_name = f"demo-call-{int(time.time())}"
    token = (
        lkapi.AccessToken(rig.livekit_api_key, rig.livekit_api_secret)
        .with_identity("caller")
        .with_grants(lkapi.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    greeting: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if not greeting.done():
            greeting.set_result(
                f"{packet.participant.identity if packet.participant else '?'}: "
                f"{packet.data.decode()}"
            )

    await room.connect(rig.livekit_url, token)
    try:
        async with lkapi.LiveKitAPI(http_url, rig.livekit_api_key, rig.livekit_api_secret) as lk:
            await lk.agent_dispatch.create_dispatch(
                lkapi.CreateAgentDispatchRequest(
                    agent_name=AGENT, room=room_name, metadata='{"caller": "demo"}'
                )
            )
        print(f"\ndispatched {AGENT} into room {room_name}; waiting for its greeting...")
        return await asyncio.wait_for(greeting, timeout=60)
    finally:
        await room.disconnect()


AUTOSCALED = rig_env.REPO_ROOT / "examples" / "agentworker-autoscaled.yaml"
CALLS_AGENT = "calls-agent"


async def send_calls(rig: rig_env.RigEnv, count: int, hold_s: float) -> None:
    http_url = rig.livekit_url.replace("ws://", "http://")
    async with lkapi.LiveKitAPI(http_url, rig.livekit_api_key, rig.livekit_api_secret) as lk:
        for index in range(count):
            await lk.agent_dispatch.create_dispatch(
                lkapi.CreateAgentDispatchRequest(
                    agent_name=CALLS_AGENT,
                    room=f"demo-calls-{int(time.time())}-{index}",
                    metadata=json.dumps({"hold_s": hold_s}),
                )
            )
            await asyncio.sleep(3.0)  # calls arrive one by one, as callers do


def watch_fleet(timeout_s: float) -> int:
    """Print the AgentWorker's status whenever it changes, until its calls ended and it is back
    to one worker; the most calls seen at once."""
    last, most, deadline = "", 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = json.loads(kubectl("get", "aw", CALLS_AGENT, "-n", NAMESPACE, "-o", "json",
                                 echo=False))  # fmt: skip
        state = raw.get("status") or {}
        most = max(most, int(state.get("activeJobs") or 0))
        row = (
            f"desired {state.get('desiredReplicas')}, ready {state.get('readyReplicas')}, "
            f"calls {state.get('activeJobs')}, load {state.get('load')}, "
            f"available {state.get('available')}, full {state.get('full')}"
        )
        if row != last:
            print(f"  {time.strftime('%H:%M:%S')}  {row}", flush=True)
            last = row
        if most and state.get("activeJobs") == 0 and state.get("desiredReplicas") == 1:
            break
        time.sleep(1)
    return most


def autoscaling_demo(rig: rig_env.RigEnv) -> None:
    manifest = AUTOSCALED.read_text().replace("ws://127.0.0.1:7880", rig.livekit_url)
    print(f"\n$ kubectl apply -n {NAMESPACE} -f examples/agentworker-autoscaled.yaml")
    kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=manifest, echo=False)
    wait_ready(name=CALLS_AGENT)
    calls = 10
    print(
        f"\n{calls} calls of 40 s arrive, one every 3 s (each is a quarter of a worker); the "
        "operator adds workers as they fill up, and once the calls end it retires the idle ones:"
    )
    sender = threading.Thread(target=lambda: asyncio.run(send_calls(rig, calls, hold_s=40)))
    sender.start()
    most = watch_fleet(timeout_s=240)
    sender.join()
    print(f"\nmost calls at once: {most} of {calls} sent")
    kubectl(
        "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp",
        "--field-selector", f"involvedObject.name={CALLS_AGENT}",
        "-o", "custom-columns=REASON:.reason,MESSAGE:.message",
    )  # fmt: skip
    kubectl("get", "aw", "-n", NAMESPACE)


def main() -> int:
    rig = rig_env.load()
    kubectl("get", "nodes", "-o", "wide")
    ensure_operator()
    apply_fleet(rig)
    took = wait_ready()
    print(f"\nAgentWorker {AGENT} Ready {took:.1f}s after apply")
    kubectl("get", "aw", "-n", NAMESPACE)
    kubectl("get", "deploy,pods", "-n", NAMESPACE, "-o", "wide")
    print(f"\nThe agent says: {asyncio.run(take_a_call(rig))}")
    autoscaling_demo(rig)
    print(
        "\nTry: kubectl describe aw basic-agent -n demo; kubectl scale aw/basic-agent -n demo "
        "--replicas=3; curl http://<pod IP>:8081/worker. `make rig-down` stops everything."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
