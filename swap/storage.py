"""Run storage: local paths, shared file systems and URIs (s3://, gs://, ...) via pyarrow.fs.

Run: python -c "from swap.storage import join; print(join('s3://bucket/runs', 'a', 'b'))"
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pyarrow.fs as pafs

from swap.errors import SwapError

Location = str | os.PathLike  # a local path, or a URI such as s3://bucket/runs


def is_uri(location: Location) -> bool:
    return "://" in os.fspath(location)


def absolute(location: Location) -> str:
    """A location every process can use: a URI as it is, a local path made absolute."""
    location = os.fspath(location)
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def resolve(location: Location) -> tuple[pafs.FileSystem, str]:
    """The file system holding `location`, and the path inside it."""
    location = os.fspath(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), absolute(location)
    try:
        return pafs.FileSystem.from_uri(location)
    # pyarrow.lib.ArrowInvalid is a ValueError (unknown scheme), ArrowIOError an OSError (no
    # endpoint, region not found); pyarrow.fs has no ArrowInvalid: naming it raised AttributeError.
    except (OSError, ValueError) as exc:
        raise SwapError(f"{location}: storage not reachable ({exc})") from None


def join(location: Location, *parts: str) -> str:
    return "/".join([os.fspath(location).rstrip("/"), *parts])


def exists(location: Location) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def make_dir(location: Location) -> None:
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def write_bytes(location: Location, data: bytes, durable: bool = True) -> str:
    """Write under a temporary name beside `location`, then rename it into place: a reader
    sees the old file or the whole new one, never half of it. Returns the data's SHA-256.

    A local file is also durable when this returns: its bytes and then its directory's entry
    are fsynced, so a power cut or a kernel crash after the rename cannot leave an empty or
    half-written file under the final name. (Object stores commit a whole object per PUT.)
    Not `durable`: no fsync (0.7 ms a write here), for files rewritten every second that a
    crash may leave stale, never torn (progress reports)."""
    if not is_uri(location):
        _write_local(Path(absolute(location)), data, durable)
        return hashlib.sha256(data).hexdigest()
    fs, path = resolve(location)
    parent, _, name = path.rpartition("/")
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise
    return hashlib.sha256(data).hexdigest()


def _write_local(path: Path, data: bytes, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)


def sha256(location: Location, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in 4 MiB chunks."""
    fs, path = resolve(location)
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as stream:
            while block := stream.read(chunk):
                digest.update(block)
    except FileNotFoundError:
        raise SwapError(f"{location}: not found") from None
    return digest.hexdigest()


def delete(location: Location) -> None:
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def read_bytes(location: Location, missing_ok: bool = False) -> bytes | None:
    """The file's bytes; a missing one is a SwapError naming it, or None with `missing_ok`
    (one request to an object store, not a look and then a read)."""
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.readall()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise SwapError(f"{location}: not found") from None
