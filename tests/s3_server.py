"""A real S3-compatible server for tests: moto's, on 127.0.0.1, with signature checks on.

Run: used by tests that read or write s3:// URIs: `with s3_server() as s3: ...`
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from .ray_cluster import free_port

REGION = "us-east-1"  # moto's default; moto serves every bucket whatever region a request names
# Every action allowed: the tests check that requests are signed right, not IAM policies.
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str
    secret_key: str
    region: str
    temp_dir: Path  # the server's own: its log and the objects it spills to disk

    @property
    def env(self) -> dict[str, str]:
        """What a process needs so that pyarrow (and Ray Train, Ray Data through it) reach this
        server with plain s3://bucket/key URIs: add it to os.environ before `ray.init`, or to the
        environment of a `swap run` or `ray start` subprocess."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,  # pyarrow 26 reads it (or _S3); http://: no TLS
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Never ask a cloud machine's metadata service for other credentials.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def wrong_secret(self) -> S3Server:
        """The same server and key id with another secret key: every request is refused
        (SignatureDoesNotMatch), as with credentials copied wrong."""
        return dataclasses.replace(self, secret_key="x" * len(self.secret_key))

    def wrong_key(self) -> S3Server:
        """A key id the server does not know (InvalidAccessKeyId)."""
        return dataclasses.replace(self, access_key="AKIA" + "X" * 16)

    def filesystem(self, **options) -> pafs.S3FileSystem:
        """A pyarrow file system with these credentials, which may create and delete buckets
        (a file system from `FileSystem.from_uri` may not)."""
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=self.endpoint,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            **options,
        )

    def create_bucket(self, bucket: str) -> str:
        """A new empty bucket; returns its URI, s3://bucket. Names as AWS has them: 3 to 63
        lowercase letters, digits, dots and hyphens (moto refuses "b": InvalidBucketName)."""
        self.filesystem().create_dir(bucket)
        return f"s3://{bucket}"

    def delete_bucket(self, bucket: str) -> None:
        """The bucket and every object in it."""
        self.filesystem().delete_dir(bucket)

    def upload(self, local_dir: str | os.PathLike, uri: str) -> list[str]:
        """Copy a local folder's files under `uri` (s3://bucket/prefix), keeping their relative
        paths; returns their URIs, sorted."""
        fs = self.filesystem()
        prefix = uri.removeprefix("s3://").rstrip("/")
        pafs.copy_files(os.fspath(local_dir), prefix, pafs.LocalFileSystem(), fs)
        found = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
        return sorted(f"s3://{i.path}" for i in found if i.type == pafs.FileType.File)


def require_moto() -> None:
    """Skip the calling test without moto's server, or fail it in CI, which must run it."""
    import pytest

    if importlib.util.find_spec("moto") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("moto is not installed; .ci/run installs it (pip install 'moto[server]')")
    pytest.skip("moto is not installed (pip install 'moto[server]'); CI runs this test")


@contextlib.contextmanager
def s3_server(seconds: float = 30) -> Iterator[S3Server]:
    """moto's server on a free port of 127.0.0.1, in a temp dir of its own, with one IAM user
    whose key pair signs every request: a request signed with anything else is refused, as by
    AWS. Holds no bucket at first. The server (a process group of its own) is killed on exit."""
    temp_dir = Path(tempfile.mkdtemp(prefix="s3", dir="/tmp"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # Objects over moto's buffer size spill to TMPDIR: keep them in the server's temp dir.
    env = {**os.environ, "TMPDIR": str(temp_dir)}
    log = temp_dir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            cwd=temp_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_answering(endpoint, process, log, seconds)
        access_key, secret_key = create_user(endpoint)
        require_signatures(endpoint)
        yield S3Server(endpoint, access_key, secret_key, REGION, temp_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # it holds nothing worth a clean shutdown
        process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_until_answering(
    endpoint: str, process: subprocess.Popen, log: Path, seconds: float
) -> None:
    """Poll the server until it answers HTTP (any status), or fail with its log."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto server not answering after {seconds:.0f}s:\n{tail(log)}"
                ) from None
            time.sleep(0.05)


def create_user(endpoint: str) -> tuple[str, str]:
    """An IAM user allowed everything, and its access key pair. Sent before signatures are
    required, so any credentials sign these requests."""
    import boto3  # moto[server] brings it; swap itself never needs it

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="swap-tests")
    iam.put_user_policy(UserName="swap-tests", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="swap-tests")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def require_signatures(endpoint: str) -> None:
    """From now on every request must be signed with a known key (moto checks none by
    default): 0 more unauthenticated requests."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        headers={"Content-Type": "text/plain"},  # not a form, which Flask would parse away
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
