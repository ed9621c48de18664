"""Ray Jobs on a real head started with `ray start` (token auth on): swap submit/status/logs/
stop/list, and the plain `ray job submit` way. Run: pytest tests/integration/test_submit.py
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import REPO
from ..ray_cluster import BIN, ray_head

TINY = [
    "phase1.max_epochs=2",
    "phase2.workers=2",
    "phase2.epochs=1",
    "resources.cpus_per_worker=0.5",
]


@pytest.fixture(scope="module")
def head():
    with ray_head(num_cpus=2) as head:
        yield head


def client_env(head, **extra: str) -> dict[str, str]:
    """A client's environment: the token where Ray keeps it, but RAY_AUTH_MODE unset, as a
    user's shell has it."""
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
    return {**env, **extra}


def swap(head, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(
        [str(BIN / "swap"), *args],
        capture_output=True,
        text=True,
        env=env or client_env(head),
        timeout=timeout,
    )


def job_id_of(stdout: str) -> str:
    return stdout.split("as Ray job ")[1].split()[0]


def finished_results(output_dir: Path) -> dict:
    [path] = output_dir.glob("*/*/results.json")
    return json.loads(path.read_text())


def test_submit_wait_then_manage_the_job(head, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text((REPO / "configs" / "quickstart.yaml").read_text())
    out = tmp_path / "runs"
    done = swap(head, "submit", str(spec), "--wait", "--address", head.dashboard, *TINY,
                f"output.dir={out}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = job_id_of(done.stdout)
    assert f"dashboard: {head.dashboard}/#/jobs/{job_id}" in done.stdout
    assert "phase 2  worker 1" in done.stdout  # the logs were followed
    assert done.stdout.splitlines()[-1] == f"Ray job {job_id}: SUCCEEDED"
    results = finished_results(out)
    assert results["status"] == "finished" and results["spec"]["phase2"]["workers"] == 2

    status = swap(head, "status", job_id, "--address", head.dashboard)
    assert status.returncode == 0
    assert status.stdout.startswith(f"{job_id}: SUCCEEDED")
    assert "name: digits-quickstart" in status.stdout
    # The spec travels inside the job: the entrypoint names no file on this disk.
    assert "entrypoint: swap run --spec-env SWAP_JOB_SPEC\n" in status.stdout

    logs = swap(head, "logs", job_id, "--address", head.dashboard)
    assert logs.returncode == 0 and "SWAP model" in logs.stdout

    listing = swap(head, "list", env=client_env(head, RAY_ADDRESS=head.dashboard))
    [row] = [line for line in listing.stdout.splitlines() if line.startswith(job_id)]
    assert row.split()[1] == "SUCCEEDED" and row.endswith("digits-quickstart")

    stop = swap(head, "stop", job_id, "--address", head.dashboard)
    assert stop.returncode == 2
    assert stop.stderr.strip() == (
        f"swap: error: job {job_id} has already ended (SUCCEEDED): nothing to stop"
    )


def test_plain_ray_job_submit_runs_swap(head, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.yaml").write_text((REPO / "configs" / "quickstart.yaml").read_text())
    out = tmp_path / "runs"
    env = {**client_env(head), "RAY_AUTH_MODE": "token"}  # the ray CLI needs it said
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", head.dashboard,
         "--working-dir", str(work), "--", "swap", "run", "spec.yaml", *TINY, f"output.dir={out}"],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert finished_results(out)["status"] == "finished"


def test_stop_a_running_job(head, tmp_path):
    started = swap(head, "submit", str(REPO / "configs" / "quickstart.yaml"),
                   "--address", head.dashboard, "phase1.max_epochs=500",
                   f"output.dir={tmp_path}")  # fmt: skip
    job_id = job_id_of(started.stdout)
    assert swap(head, "stop", job_id, "--address", head.dashboard).returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = swap(head, "status", job_id, "--address", head.dashboard).stdout
        if "STOPPED" in status:
            break
        time.sleep(0.5)
    assert status.startswith(f"{job_id}: STOPPED")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "raysubmit_nope"], "swap: error: job raysubmit_nope: no such job on this"),
        (["logs", "raysubmit_nope"], "swap: error: job raysubmit_nope: no such job on this"),
        (["stop", "raysubmit_nope"], "swap: error: job raysubmit_nope: no such job on this"),
    ],
)
def test_unknown_job_ids_exit_2(head, args, message):
    proc = swap(head, *args, "--address", head.dashboard)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)


def test_bad_spec_submits_nothing(head, tmp_path):
    listed = swap(head, "list", "--address", head.dashboard)
    assert listed.returncode == 0
    before = listed.stdout.count("raysubmit_")
    proc = swap(head, "submit", str(REPO / "configs" / "quickstart.yaml"),
                "--address", head.dashboard, "phase2.workers=0")  # fmt: skip
    assert proc.returncode == 2
    assert "phase2.workers: must be greater than 0 (got 0)" in proc.stderr
    assert "as Ray job" not in proc.stdout
    listed = swap(head, "list", "--address", head.dashboard)
    assert listed.returncode == 0 and listed.stdout.count("raysubmit_") == before


def test_wrong_token_is_refused_with_a_clear_error(head, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text(secrets.token_hex(32))
    env = client_env(head, RAY_AUTH_TOKEN_PATH=str(wrong))
    proc = swap(head, "list", "--address", head.dashboard, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"swap: error: {head.dashboard}: the cluster wants Ray's auth")


def test_no_address_and_unreachable_address_exit_2(head, tmp_path):
    env = {k: v for k, v in client_env(head).items() if k != "RAY_ADDRESS"}
    proc = swap(head, "submit", str(REPO / "configs" / "quickstart.yaml"), env=env)
    assert proc.returncode == 2
    assert "no Ray cluster to reach: pass --address" in proc.stderr
    proc = swap(head, "list", "--address", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr.startswith("swap: error: http://127.0.0.1:9: cannot reach the Ray Jobs")
