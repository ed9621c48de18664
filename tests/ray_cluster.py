"""Real Ray clusters for tests: `ray start` processes on 127.0.0.1 with free ports of their own.

Run: used by tests/integration/ (test_submit, test_multinode, test_prometheus):
`with ray_head(num_cpus=2) as head: ...`
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    gcs_address: str  # for `ray start --address` and `ray.init(address=...)`
    dashboard: str  # for the Jobs API
    temp_dir: str
    env: dict[str, str]  # the cluster's: token auth on, with this cluster's own token
    token: str


def node_ports() -> list[str]:
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    return [f"{flag}={port}" for flag, port in ports.items()]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in a session of its own, so the group can be stopped as one;
    its output goes to `log` (a file: a pipe nobody drains would block it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> None:
    """Kill this node's processes only (`ray stop` would stop every Ray on the machine).

    SIGKILL, not SIGTERM: a terminated node drains for up to 30 s, and a test's cluster holds
    nothing worth a graceful shutdown. Its workers die with their raylet."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_jobs_api(head: Head, process: subprocess.Popen, seconds: float = 90) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {head.token}"}
    while True:
        if process.poll() is not None:
            output = (Path(head.temp_dir) / "ray-start.log").read_text()[-2000:]
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{output}")
        try:
            JobSubmissionClient(head.dashboard, headers=auth).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def ray_head(
    num_cpus: float = 2,
    resources: str | None = None,
    num_gpus: int = 0,
    env: dict[str, str] | None = None,
) -> Iterator[Head]:
    """A head node with the Jobs API, bound to 127.0.0.1, in its own short temp dir, with token
    authentication on (as Ray 2.60 has it by default) and a token of its own. `num_gpus`:
    logical GPUs, which Ray leases (CUDA_VISIBLE_DEVICES per task) with no GPU in the machine."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are long
    token = secrets.token_hex(32)
    token_file = Path(temp_dir) / "auth_token"
    token_file.write_text(token)
    env = {
        **os.environ,
        **(env or {}),  # e.g. a test S3 server's endpoint and keys: every node's processes
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
    }
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    port, dashboard_port = free_port(), free_port()
    args = [
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        f"--temp-dir={temp_dir}",
        *node_ports(),
    ]
    if resources:
        args.append(f"--resources={resources}")
    process = start(args, env, Path(temp_dir) / "ray-start.log")
    head = Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", temp_dir, env, token)
    extra: list[subprocess.Popen] = []
    try:
        wait_for_jobs_api(head, process)

        def join_node(**kw) -> subprocess.Popen:
            extra.append(add_node(head, **kw))
            return extra[-1]

        head.add_node = join_node  # type: ignore[attr-defined]
        yield head
    finally:
        for node in extra:
            stop(node)
        stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def add_node(head: Head, num_cpus: float, resources: str | None = None) -> subprocess.Popen:
    """A second raylet on this machine joining `head`, as a worker node of the cluster."""
    args = [
        f"--address={head.gcs_address}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
    ]
    args += node_ports()
    if resources:
        args.append(f"--resources={resources}")
    return start(args, head.env, Path(head.temp_dir) / "ray-start-node.log")
