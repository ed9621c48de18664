"""Run storage and checkpoint files: atomic writes, URIs, never reusing a run directory.

Run: pytest tests/unit/test_rundir.py
"""

from __future__ import annotations

import os

import pytest
import torch

from swap import storage
from swap.errors import SwapError
from swap.rundir import (
    load_state_dict,
    manifest,
    new_run_dir,
    open_run,
    read_json,
    save_state_dict,
    versions,
    write_json,
)
from tests.helpers import tiny_spec


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    target = str(tmp_path / "a" / "b" / "file.bin")
    storage.write_bytes(target, b"first")
    storage.write_bytes(target, b"second")
    assert storage.read_bytes(target) == b"second"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["file.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = str(tmp_path / "results.json")
    write_json(target, {"ok": 1})

    class Unwritable:  # fails inside the write, after the temporary file was opened
        pass

    with pytest.raises(TypeError):
        storage.write_bytes(target, Unwritable())
    assert storage.read_bytes(target) == b'{\n  "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("as_uri", [False, True])
def test_state_dicts_round_trip_through_paths_and_uris(tmp_path, as_uri):
    location = str(tmp_path / "w" / "model.pt")
    if as_uri:
        location = f"file://{location}"
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    saved = save_state_dict(state, location)
    for loaded in (load_state_dict(location), load_state_dict(location, saved.sha256)):
        assert torch.equal(loaded["w"], state["w"]) and loaded["n"].item() == 3
    file = tmp_path / "w" / "model.pt"
    data = file.read_bytes()
    file.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed
    with pytest.raises(SwapError, match="checksum mismatch"):
        load_state_dict(location, saved.sha256)


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(SwapError, match=f"{missing}: checkpoint not found"):
        load_state_dict(missing)
    corrupt = tmp_path / "bad.pt"
    save_state_dict({"w": torch.ones(100)}, str(corrupt))
    corrupt.write_bytes(corrupt.read_bytes()[:50])
    with pytest.raises(SwapError, match=f"{corrupt}: not a readable checkpoint"):
        load_state_dict(str(corrupt))


def test_run_directories_are_new_every_time(tmp_path):
    runs = {new_run_dir(str(tmp_path), "job") for _ in range(5)}
    assert len(runs) == 5
    assert all(r.startswith(f"{tmp_path}/job/") for r in runs)
    uri = new_run_dir(f"file://{tmp_path}/u", "job")
    assert uri.startswith(f"file://{tmp_path}/u/job/") and storage.exists(uri)


def test_relative_output_dirs_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert new_run_dir("runs", "job").startswith(f"{tmp_path}/runs/job/")


def test_join():
    assert storage.join("s3://bucket/runs/", "a", "b.pt") == "s3://bucket/runs/a/b.pt"


def test_resume_refuses_a_run_another_swap_version_wrote(tmp_path):
    spec = tiny_spec(tmp_path)
    run_dir, results = open_run(spec, None)
    write_json(f"{run_dir}/results.json", results)
    assert open_run(spec, run_dir)[1]["resumed"] == 1  # its own version's run resumes

    results["versions"]["swap"] = "0.1.0"
    write_json(f"{run_dir}/results.json", results)
    with pytest.raises(
        SwapError,
        match=rf"--resume: .* written by swap 0.1.0, this is swap "
        rf"{versions()['swap']}; start a new run",
    ):
        open_run(spec, run_dir)
    assert read_json(f"{run_dir}/results.json")["versions"]["swap"] == "0.1.0"  # left as it was


def test_a_local_write_is_fsynced_file_then_directory_before_it_returns(tmp_path, monkeypatch):
    """Durable, not only atomic: the bytes are flushed to disk under the temporary name, then
    the directory entry of the rename."""
    synced = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "d" / "results.json"
    storage.write_bytes(str(target), b"{}")
    assert len(synced) == 2
    assert synced[0].startswith(f"{tmp_path}/d/.results.json.") and synced[1] == f"{tmp_path}/d"
    assert target.read_bytes() == b"{}"
    synced.clear()
    storage.write_bytes(str(target), b"[]", durable=False)  # progress reports: atomic only
    assert synced == [] and target.read_bytes() == b"[]"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary left


def test_a_damaged_json_record_is_named_in_one_line(tmp_path):
    record = tmp_path / "results.json"
    record.write_text('{"status": "finished", "phase1": {"epo')
    with pytest.raises(SwapError, match=rf"^{record}: not valid JSON at line 1: the file is "):
        read_json(str(record))
    record.write_bytes(b"\xff\xfe{")
    with pytest.raises(SwapError, match="not valid JSON: the file is truncated or damaged"):
        read_json(str(record))


def test_a_new_run_is_recorded_as_it_opens(tmp_path):
    """results.json exists from the start: a driver killed at any moment is resumable."""
    run_dir, results = open_run(tiny_spec(tmp_path), None)
    assert read_json(f"{run_dir}/results.json") == results
    assert results["status"] == "running" and "phase1" not in results


def test_the_manifest_lists_every_checkpoint_swag_statistics_too(tmp_path):
    run_dir = str(tmp_path)
    results = {
        "phase1": {"checkpoint": f"{run_dir}/phase1/checkpoint_0", "sha256": "a"},
        "phase2": {"workers": [
            {"checkpoint": f"{run_dir}/phase2/worker-0/model.pt", "sha256": "b",
             "swag": f"{run_dir}/phase2/worker-0/swag.pt", "swag_sha256": "c"},
            {"index": 1, "status": "failed"},
        ]},
        "phase3": {"model": f"{run_dir}/final/model.pt", "sha256": "d"},
    }  # fmt: skip
    assert manifest(run_dir, results) == {
        "final/model.pt": "d",
        "phase1/checkpoint_0/model.pt": "a",
        "phase2/worker-0/model.pt": "b",
        "phase2/worker-0/swag.pt": "c",
    }
