"""The S3 test server itself (tests/s3_server.py): pyarrow reaches it with plain s3:// URIs from
its environment variables alone, and refuses what AWS would refuse, in the words AWS uses.

Run: pytest tests/integration/test_s3_server.py   (needs: pip install 'moto[server]')
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest

from ..s3_server import S3Server, require_moto, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    require_moto()
    with s3_server() as server:
        yield server


def uri_filesystem(server: S3Server, monkeypatch: pytest.MonkeyPatch, uri: str):
    """What swap.storage does with a URI, in a process whose environment is `server.env`."""
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return pafs.FileSystem.from_uri(uri)


def write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def test_a_file_written_through_a_uri_reads_back(s3, monkeypatch):
    s3.create_bucket("roundtrip")
    fs, path = uri_filesystem(s3, monkeypatch, "s3://roundtrip/runs/a/.model.pt.tmp")
    write(fs, path, b"weights")
    fs.move(path, "roundtrip/runs/a/model.pt")  # swap.storage's write-then-rename
    with fs.open_input_stream("roundtrip/runs/a/model.pt") as stream:
        assert stream.readall() == b"weights"
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    assert fs.get_file_info("roundtrip/runs/a").type == pafs.FileType.Directory


def test_upload_keeps_relative_paths_and_delete_bucket_removes_everything(s3, tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "1.png").write_bytes(b"png")
    (tmp_path / "part-0.parquet").write_bytes(b"par")
    s3.create_bucket("data")
    assert s3.upload(tmp_path, "s3://data/set") == [
        "s3://data/set/part-0.parquet",
        "s3://data/set/train/cat/1.png",
    ]
    s3.delete_bucket("data")
    assert s3.filesystem().get_file_info("data").type == pafs.FileType.NotFound


def test_a_missing_bucket_is_not_found(s3, monkeypatch):
    fs, path = uri_filesystem(s3, monkeypatch, "s3://no-such-bucket/runs/x.json")
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    with pytest.raises(FileNotFoundError, match="Path does not exist 'no-such-bucket/runs/x.json'"):
        fs.open_input_stream(path)
    with pytest.raises(OSError, match="NO_SUCH_BUCKET.*The specified bucket does not exist"):
        write(fs, path, b"{}")
    # A file system from a URI may not create buckets: make_dir in swap.storage fails so.
    with pytest.raises(OSError, match="Bucket 'no-such-bucket' not found"):
        fs.create_dir("no-such-bucket/runs", recursive=True)


@pytest.mark.parametrize(
    ("wrong", "code"),
    [("wrong_secret", "SIGNATURE_DOES_NOT_MATCH"), ("wrong_key", "INVALID_ACCESS_KEY_ID")],
)
def test_wrong_credentials_are_refused(s3, monkeypatch, wrong, code):
    bucket = s3.create_bucket(f"locked-{wrong.replace('_', '-')}").removeprefix("s3://")
    write(s3.filesystem(), f"{bucket}/x", b"secret")
    fs, path = uri_filesystem(getattr(s3, wrong)(), monkeypatch, f"s3://{bucket}/x")
    with pytest.raises(OSError, match=code):
        write(fs, f"{bucket}/y", b"{}")
    # A HEAD request's refusal has no body to name the cause: only the status is left.
    with pytest.raises(OSError, match="AWS Error ACCESS_DENIED during HeadObject operation"):
        fs.open_input_stream(path)


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_server_holds_nothing_listens_on_127_0_0_1_alone_and_is_gone_after():
    require_moto()
    with s3_server() as server:
        port = urllib.parse.urlsplit(server.endpoint).port
        assert server.filesystem().get_file_info(pafs.FileSelector("")) == []  # no bucket
        assert not refused("127.0.0.1", port)
        assert refused("127.0.0.2", port)  # loopback too, but a server on 0.0.0.0 would answer
        temp_dir = server.temp_dir
    assert refused("127.0.0.1", port)
    assert not temp_dir.exists()
