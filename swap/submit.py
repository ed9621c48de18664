"""Submitting swap jobs to a Ray cluster and managing them, through Ray's Jobs API.

Run: swap submit configs/quickstart.yaml --address http://127.0.0.1:8265 --wait
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient

from swap.errors import SwapError
from swap.ray_session import RAY_DEFAULTS
from swap.spec import Spec

# The resolved spec travels inside the job, in this environment variable: the cluster never
# needs a file from the client's disk.
SPEC_ENV = "SWAP_JOB_SPEC"
ENTRYPOINT = f"swap run --spec-env {SPEC_ENV}"


def cluster_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS; never a silent local cluster for a command meant for one."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SwapError(
            "no Ray cluster to reach: pass --address http://HEAD:8265 or set RAY_ADDRESS"
        )
    return address


def jobs_client(address: str | None):
    """A JobSubmissionClient for the cluster, sending Ray's auth token when there is one."""
    address = cluster_address(address)
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except AuthenticationError:
        raise SwapError(
            f"{address}: the cluster wants Ray's auth token: put it in ~/.ray/auth_token or "
            "RAY_AUTH_TOKEN_PATH, or set RAY_AUTH_TOKEN (see `ray get-auth-token`)"
        ) from None
    except Exception as exc:  # ConnectionError, ValueError, requests' errors: all mean "not there"
        raise SwapError(f"{address}: cannot reach the Ray Jobs API: {_first_line(exc)}") from None


def auth_headers() -> dict[str, str]:
    """The bearer token from where Ray keeps it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or
    ~/.ray/auth_token.

    Ray's client only sends it when RAY_AUTH_MODE=token is set in the client's own environment,
    although a head started by `ray start` turns token auth on whenever a token exists. Sending
    it whenever one is found makes `swap submit` work against either kind of cluster.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        with contextlib.suppress(OSError):
            token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def runtime_env(spec: Spec) -> dict[str, Any]:
    """The spec's runtime_env with swap's own needs merged in (the user's values win, but for
    the spec itself, which must be the one validated here)."""
    env = spec.runtime_env.model_dump(exclude_none=True)
    env["env_vars"] = {**RAY_DEFAULTS, **env.get("env_vars", {}), SPEC_ENV: spec.to_yaml()}
    return env


def submit(spec: Spec, address: str | None, submission_id: str | None = None) -> tuple[str, str]:
    """Submit a validated spec; return (submission id, dashboard URL)."""
    client = jobs_client(address)
    try:
        job_id = client.submit_job(
            entrypoint=ENTRYPOINT,
            runtime_env=runtime_env(spec),
            submission_id=submission_id,
            metadata={"swap_name": spec.name},
        )
    except RuntimeError as exc:
        raise SwapError(f"submitting {spec.name}: {_first_line(exc)}") from None
    return job_id, client.get_address()


def follow(job_id: str, address: str | None) -> str:
    """Print the job's logs as they come until it ends; return its final status."""
    client = jobs_client(address)
    _info(client, job_id)  # an unknown id is an error, not an empty stream

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    # The log stream closes as the job ends; its status may take a moment to say so.
    deadline = time.monotonic() + 30
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return str(status.value)


def job_info(job_id: str, address: str | None):
    return _info(jobs_client(address), job_id)


def _info(client: Any, job_id: str):
    """The job's JobDetails; a SwapError if the cluster has no such job."""
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        raise SwapError(f"job {job_id}: {_not_found_or(exc)}") from None


def job_logs(job_id: str, address: str | None) -> str:
    client = jobs_client(address)
    _info(client, job_id)
    return client.get_job_logs(job_id)


def stop(job_id: str, address: str | None) -> None:
    client = jobs_client(address)
    info = _info(client, job_id)
    if info.status.is_terminal():
        raise SwapError(f"job {job_id} has already ended ({info.status.value}): nothing to stop")
    if not client.stop_job(job_id):
        raise SwapError(f"job {job_id} ended before it could be stopped")


def list_jobs(address: str | None) -> list[Any]:
    jobs = jobs_client(address).list_jobs()
    return sorted(jobs, key=lambda job: job.start_time or 0)


def _not_found_or(exc: Exception) -> str:
    text = _first_line(exc)
    return "no such job on this cluster" if "404" in text or "does not exist" in text else text


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
