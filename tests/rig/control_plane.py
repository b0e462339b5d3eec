"""Start and stop the rig: etcd, kube-apiserver, controller-manager, scheduler, LiveKit, runner.

Test infrastructure only. Everything listens on 127.0.0.1 on ports picked free at start.
Processes are detached, their pids kept in .rig/pids/, their output in .rig/logs/; `down`
stops exactly those pids and nothing else. `up` starts only the runner when it is the one
component down; otherwise (anything else down) it starts afresh. `restart_runner` restarts the
process runner alone (after a change to tests/rig/), and the pods' processes keep running.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.rig import adoption, pki
from tests.rig.env import ENV_FILE, REPO_ROOT, RIG_DIR

PIDS = RIG_DIR / "pids"
LOGS = RIG_DIR / "logs"
PKI = RIG_DIR / "pki"
STATE = RIG_DIR / "state.json"
LINKS = RIG_DIR / "bin"
NODE_NAME = "rig-node"
SERVICE_CIDR = "10.0.0.0/24"
# Order of start; `down` stops them in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "livekit",
    "runner",
)


class RigError(RuntimeError):
    """A component failed to build or to become healthy."""


@dataclass(frozen=True, slots=True)
class Binaries:
    etcd: Path
    kubernetes: Path
    helm: Path
    livekit: Path
    kubectl: Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port no socket holds on any address (LiveKit binds its RTC ports on every interface,
    and ICE gathering holds ephemeral UDP ports on each): a dual-stack bind on :: is refused
    for a port held on any address, where one on 127.0.0.1 is not."""
    if socket.has_dualstack_ipv6():
        with socket.socket(socket.AF_INET6, kind) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return int(sock.getsockname()[1])
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def build() -> Binaries:
    """Run the cached Go build; it prints one bin directory per component."""
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "tests/rig/build.sh")],
        check=False,
        capture_output=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    if out.returncode != 0:
        raise RigError(f"tests/rig/build.sh failed with exit code {out.returncode}")
    dirs = [Path(line) for line in out.stdout.split()]
    by_name = {d.name.split("-v")[0]: d for d in dirs}
    kubectl = Path(sys.executable).parent / "kubectl"
    return Binaries(
        etcd=by_name["etcd"] / "etcd",
        kubernetes=by_name["kubernetes"],
        helm=by_name["helm"] / "helm",
        livekit=by_name["livekit"] / "livekit-server",
        kubectl=kubectl,
    )


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child (a restart): reap it if it ended
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(name: str) -> int | None:
    path = PIDS / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    return pid if pid > 0 and pid_alive(pid) else None


_DETACHED: list[subprocess.Popen[bytes]] = []
"""Components started from a long-lived process (a fault test): kept so that the Popen objects
are never collected while their process runs (Popen.__del__ warns about that)."""


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=REPO_ROOT,
        )
    (PIDS / f"{name}.pid").write_text(str(proc.pid))
    _DETACHED.append(proc)
    return proc.pid


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_pid(name) is None:
            raise RigError(f"{name} exited while waiting for {what}; see {LOGS / (name + '.log')}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        time.sleep(0.3)
    raise RigError(f"timed out after {timeout_s:.0f}s waiting for {what}; see {LOGS}/{name}.log")


def http_ok(url: str, context: ssl.SSLContext | None = None, expect: bytes | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        body: bytes = resp.read()
        return resp.status == 200 and (expect is None or expect in body)


def admin_tls() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    context.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return context


def write_kubeconfig(path: Path, user: str, api_port: int) -> None:
    def data(name: str) -> str:
        return base64.b64encode((PKI / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "rig",
                "cluster": {
                    "server": f"https://127.0.0.1:{api_port}",
                    "certificate-authority-data": data("ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": data(f"{user}.crt"),
                    "client-key-data": data(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "rig", "context": {"cluster": "rig", "user": user}}],
        "current-context": "rig",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def start_etcd(bins: Binaries, state: dict[str, int]) -> None:
    data_dir = RIG_DIR / "etcd"
    shutil.rmtree(data_dir, ignore_errors=True)
    client = f"http://127.0.0.1:{state['etcd']}"
    peer = f"http://127.0.0.1:{state['etcd_peer']}"
    spawn(
        "etcd",
        [
            str(bins.etcd),
            "--name=rig",
            f"--data-dir={data_dir}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=rig={peer}",
            f"--listen-metrics-urls=http://127.0.0.1:{state['etcd_metrics']}",
        ],
    )
    wait_until("etcd /health", lambda: http_ok(f"{client}/health"), 60, "etcd")


def start_apiserver(bins: Binaries, state: dict[str, int]) -> None:
    port = state["apiserver"]
    spawn(
        "kube-apiserver",
        [
            str(bins.kubernetes / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{state['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={PKI / 'apiserver.crt'}",
            f"--tls-private-key-file={PKI / 'apiserver.key'}",
            f"--client-ca-file={PKI / 'ca.crt'}",
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            # as OpenShift has it: setting blockOwnerDeletion needs update on the owner's
            # finalizers subresource, so the chart's RBAC is tested against it
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={PKI / 'sa.pub'}",
            f"--service-account-signing-key-file={PKI / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={RIG_DIR / 'apiserver'}",
            # The built-in endpoint reconciler refuses the loopback address: nothing needs it here.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
    )
    context = admin_tls()
    wait_until(
        "kube-apiserver /readyz",
        lambda: http_ok(f"https://127.0.0.1:{port}/readyz", context),
        120,
        "kube-apiserver",
    )


def start_controllers(bins: Binaries, state: dict[str, int]) -> None:
    for user in ("kube-controller-manager", "kube-scheduler"):
        write_kubeconfig(RIG_DIR / f"{user}.kubeconfig", user, state["apiserver"])
    spawn(
        "kube-controller-manager",
        [
            str(bins.kubernetes / "kube-controller-manager"),
            f"--kubeconfig={RIG_DIR / 'kube-controller-manager.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={state['kcm']}",
            f"--authentication-kubeconfig={RIG_DIR / 'kube-controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={RIG_DIR / 'kube-controller-manager.kubeconfig'}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={PKI / 'sa.key'}",
            f"--root-ca-file={PKI / 'ca.crt'}",
            f"--cluster-signing-cert-file={PKI / 'ca.crt'}",
            f"--cluster-signing-key-file={PKI / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            # Pods deleted by a scale-down should go at once; no cloud, no node IPAM.
            "--terminated-pod-gc-threshold=100",
        ],
    )
    sched_config = RIG_DIR / "kube-scheduler.yaml"
    sched_config.write_text(
        json.dumps(
            {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": str(RIG_DIR / "kube-scheduler.kubeconfig")},
                "leaderElection": {"leaderElect": False},
            }
        )
    )
    spawn(
        "kube-scheduler",
        [
            str(bins.kubernetes / "kube-scheduler"),
            f"--config={sched_config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state['scheduler']}",
            f"--authentication-kubeconfig={RIG_DIR / 'kube-scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={RIG_DIR / 'kube-scheduler.kubeconfig'}",
        ],
    )
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed; loopback only
    for name, key in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
        wait_until(
            f"{name} /healthz",
            lambda k=key: http_ok(  # type: ignore[misc]
                f"https://127.0.0.1:{state[k]}/healthz", insecure
            ),
            60,
            name,
        )


def start_livekit(bins: Binaries, state: dict[str, int], key: str, secret: str) -> None:
    config = RIG_DIR / "livekit.yaml"
    config.write_text(
        json.dumps(
            {
                "port": state["livekit"],
                "bind_addresses": ["127.0.0.1"],
                "keys": {key: secret},
                "rtc": {
                    "tcp_port": state["livekit_tcp"],
                    "udp_port": state["livekit_udp"],
                    "node_ip": "127.0.0.1",
                    "use_external_ip": False,
                    "enable_loopback_candidate": True,
                    "stun_servers": ["127.0.0.1:3478"],
                },
                "logging": {"level": "info", "json": False},
                # an operator started with --webhook-port on this port gets the server's
                # webhooks (the dispatch guard's tests); with none there, they fail and are
                # dropped
                "webhook": {
                    "api_key": key,
                    "urls": [f"http://127.0.0.1:{state['livekit_webhook']}/livekit/webhook"],
                },
            }
        )
    )
    config.chmod(0o600)
    spawn("livekit", [str(bins.livekit), f"--config={config}", "--bind=127.0.0.1"])
    wait_until(
        "LiveKit GET / = OK",
        lambda: http_ok(f"http://127.0.0.1:{state['livekit']}/", expect=b"OK"),
        60,
        "livekit",
    )


def start_runner(state: dict[str, int]) -> None:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    spawn(
        "runner",
        [
            sys.executable,
            "-m",
            "tests.rig.runner",
            f"--kubeconfig={RIG_DIR / 'kubeconfig'}",
            f"--node={NODE_NAME}",
            f"--logs={LOGS / 'pods'}",
        ],
        env=env,
    )
    wait_until("the process runner's Node to be Ready", lambda: node_ready(state), 60, "runner")


def heartbeat(state: dict[str, int]) -> str:
    """The runner's Node's last heartbeat (RFC 3339, seconds), "" when it has none."""
    url = f"https://127.0.0.1:{state['apiserver']}/api/v1/nodes/{NODE_NAME}"
    with urllib.request.urlopen(url, timeout=2, context=admin_tls()) as resp:
        node = json.load(resp)
    ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    return str(ready[0].get("lastHeartbeatTime", "")) if ready else ""


def node_ready(state: dict[str, int]) -> bool:
    url = f"https://127.0.0.1:{state['apiserver']}/api/v1/nodes/{NODE_NAME}"
    with urllib.request.urlopen(url, timeout=2, context=admin_tls()) as resp:
        node = json.load(resp)
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def link_binaries(bins: Binaries) -> None:
    shutil.rmtree(LINKS, ignore_errors=True)
    LINKS.mkdir(parents=True)
    targets = [bins.etcd, bins.helm, bins.livekit, bins.kubectl] + [
        bins.kubernetes / n for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ]
    for target in targets:
        (LINKS / target.name).symlink_to(target)


def write_env(state: dict[str, int], key: str, secret: str) -> None:
    lines = {
        "KUBECONFIG": RIG_DIR / "kubeconfig",
        "RIG_KUBECONFIG": RIG_DIR / "kubeconfig",
        "LIVEKIT_URL": f"ws://127.0.0.1:{state['livekit']}",
        "LIVEKIT_API_KEY": key,
        "LIVEKIT_API_SECRET": secret,
        "RIG_LIVEKIT_WEBHOOK_PORT": state["livekit_webhook"],
        "RIG_NODE_NAME": NODE_NAME,
        "RIG_LOGS": LOGS,
        "RIG_BIN_PATH": LINKS,
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items()) + f'PATH="{LINKS}:$PATH"\n'
    ENV_FILE.write_text(text)
    ENV_FILE.chmod(0o600)


def healthy() -> bool:
    """True when every component is alive and answering: `up` then has nothing to do."""
    if not STATE.exists() or not ENV_FILE.exists():
        return False
    if any(read_pid(name) is None for name in COMPONENTS):
        return False
    state = json.loads(STATE.read_text())["ports"]
    try:
        return (
            http_ok(f"https://127.0.0.1:{state['apiserver']}/readyz", admin_tls())
            and "livekit_webhook" in state  # a rig of before the webhooks is made again
            and http_ok(f"http://127.0.0.1:{state['livekit']}/", expect=b"OK")
            and node_ready(state)
        )
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def versions(bins: Binaries) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]

    return {
        "etcd": first_line([str(bins.etcd), "--version"]),
        "kube-apiserver": first_line([str(bins.kubernetes / "kube-apiserver"), "--version"]),
        "kube-controller-manager": first_line(
            [str(bins.kubernetes / "kube-controller-manager"), "--version"]
        ),
        "kube-scheduler": first_line([str(bins.kubernetes / "kube-scheduler"), "--version"]),
        "livekit": first_line([str(bins.livekit), "--version"]),
        "kubectl": first_line([str(bins.kubectl), "version", "--client"]),
        "helm": first_line([str(bins.helm), "version", "--short"]),
        "runner": "process runner (tests/rig/runner.py)",
    }


def report(bins: Binaries) -> None:
    saved = json.loads(STATE.read_text())
    ports = saved["ports"]
    where = {
        "etcd": f"http://127.0.0.1:{ports['etcd']}",
        "kube-apiserver": f"https://127.0.0.1:{ports['apiserver']}",
        "kube-controller-manager": f"https://127.0.0.1:{ports['kcm']}",
        "kube-scheduler": f"https://127.0.0.1:{ports['scheduler']}",
        "livekit": f"ws://127.0.0.1:{ports['livekit']} (rtc tcp {ports['livekit_tcp']}, "
        f"udp {ports['livekit_udp']})",
        "runner": f"node {NODE_NAME}, pods on 127.0.x.y",
        "kubectl": str(bins.kubectl),
        "helm": str(bins.helm),
    }
    for name, version in versions(bins).items():
        log = LOGS / f"{name}.log"
        print(
            f"  {name:24} {version[:60]:60} {where.get(name, '')}"
            + (f"  log {log}" if log.exists() else "")
        )
    print(f"env file: {ENV_FILE}  (set -a; . {ENV_FILE.relative_to(REPO_ROOT)}; set +a)")


def start_runner_alone() -> bool:
    """Start only the runner when it is the one component down; whether it did.

    Everything else keeps running with its ports, keys and certificates (and every object in
    etcd), so `up` need not start afresh; the new runner adopts the pods' running processes.
    """
    if not STATE.exists() or not ENV_FILE.exists() or read_pid("runner") is not None:
        return False
    if any(read_pid(name) is None for name in COMPONENTS if name != "runner"):
        return False
    state = json.loads(STATE.read_text())["ports"]
    try:
        if not http_ok(f"https://127.0.0.1:{state['apiserver']}/readyz", admin_tls()):
            return False
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
    start_runner(state)
    return True


def restart_runner() -> None:
    """Restart the process runner alone; the pods' processes keep running and are adopted.

    SIGUSR1 to the runner's pid only (never its group): the runner exits without touching the
    processes it started, which run in sessions of their own; the new runner adopts them.
    """
    if not STATE.exists() or read_pid("kube-apiserver") is None:
        raise RigError("the rig is not running: run `make rig`")
    state = json.loads(STATE.read_text())["ports"]
    started = time.monotonic()
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pid = read_pid("runner")
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while adoption.alive(pid) and time.monotonic() < deadline:  # a zombie counts as gone
            time.sleep(0.1)
        if adoption.alive(pid):
            os.kill(pid, signal.SIGKILL)
    (PIDS / "runner.pid").unlink(missing_ok=True)
    start_runner(state)
    # The Node is still Ready from the old runner's last beat: wait for the new runner's own.
    wait_until("the new runner's heartbeat", lambda: heartbeat(state) >= since, 30, "runner")
    print(f"runner restarted in {time.monotonic() - started:.1f}s (pid {read_pid('runner')})")


RESTARTABLE = ("kube-apiserver", "livekit")


def restart(name: str) -> float:
    """Stop one component and start it again on the same ports, keys and data; the seconds it
    was down. For the fault tests: etcd keeps every object, LiveKit forgets its rooms."""
    if name not in RESTARTABLE:
        raise RigError(f"cannot restart {name!r}: one of {', '.join(RESTARTABLE)}")
    if not STATE.exists() or read_pid(name) is None:
        raise RigError(f"{name} is not running: run `make rig`")
    state = json.loads(STATE.read_text())["ports"]
    bins = build()
    stopped = time.monotonic()
    stop(name)
    if name == "kube-apiserver":
        start_apiserver(bins, state)
        # A controller manager still starting its controllers exits when the API server goes
        # away; a kubelet would restart it, so the rig does.
        if read_pid("kube-controller-manager") is None or read_pid("kube-scheduler") is None:
            stop("kube-controller-manager")
            stop("kube-scheduler")
            start_controllers(bins, state)
    else:  # LiveKit, with the config it was started with (its keys included)
        config = RIG_DIR / "livekit.yaml"
        spawn("livekit", [str(bins.livekit), f"--config={config}", "--bind=127.0.0.1"])
        wait_until(
            "LiveKit GET / = OK",
            lambda: http_ok(f"http://127.0.0.1:{state['livekit']}/", expect=b"OK"),
            60,
            "livekit",
        )
    return time.monotonic() - stopped


def pause(name: str) -> None:
    """SIGSTOP a component (e.g. etcd): it keeps its sockets open and answers nothing."""
    pid = read_pid(name)
    if pid is None:
        raise RigError(f"{name} is not running")
    os.kill(pid, signal.SIGSTOP)


def resume(name: str) -> None:
    pid = read_pid(name)
    if pid is None:
        raise RigError(f"{name} is not running")
    os.kill(pid, signal.SIGCONT)


def up() -> None:
    started = time.monotonic()
    bins = build()
    if healthy():
        print(f"rig already running (checked in {time.monotonic() - started:.1f}s)")
        report(bins)
        return
    if start_runner_alone() and healthy():
        print(f"rig up: started the runner alone in {time.monotonic() - started:.1f}s")
        report(bins)
        return
    down(quiet=True)
    RIG_DIR.mkdir(exist_ok=True)
    state = {
        name: free_port(socket.SOCK_DGRAM if name == "livekit_udp" else socket.SOCK_STREAM)
        for name in (
            "etcd",
            "etcd_peer",
            "etcd_metrics",
            "apiserver",
            "kcm",
            "scheduler",
            "livekit",
            "livekit_tcp",
            "livekit_udp",
            "livekit_webhook",
        )
    }
    key, secret = f"rig{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    shutil.rmtree(PKI, ignore_errors=True)
    pki.generate(PKI)
    write_kubeconfig(RIG_DIR / "kubeconfig", "admin", state["apiserver"])
    STATE.write_text(json.dumps({"ports": state}))
    link_binaries(bins)
    start_etcd(bins, state)
    start_apiserver(bins, state)
    start_controllers(bins, state)
    start_livekit(bins, state, key, secret)
    write_env(state, key, secret)
    start_runner(state)
    print(f"rig up in {time.monotonic() - started:.1f}s")
    report(bins)


def stop(name: str, grace_s: float = 10.0) -> None:
    pid = read_pid(name)
    path = PIDS / f"{name}.pid"
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def down(quiet: bool = False) -> None:
    # Processes started on top of the rig (the demo's operator) go first.
    extras = sorted(p.stem for p in PIDS.glob("*.pid") if p.stem not in COMPONENTS)
    for name in [*extras, *reversed(COMPONENTS)]:
        if not quiet and read_pid(name) is not None:
            print(f"stopping {name}")
        stop(name, grace_s=20.0 if name == "runner" else 10.0)
    ENV_FILE.unlink(missing_ok=True)
