"""bench/gpu_check.sh's machinery, without a GPU: a step past its time limit is ended with all it
started, pytest's all-skipped report is a SKIP, the environment it builds runs the repository's
swap, and the time-to-accuracy verdict and deadline on made-up numbers.

Run: pytest tests/integration/test_gpu_check.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest

from ..helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_bundle  # noqa: E402  bench/ is scripts, not a package
import gpu_check  # noqa: E402
import sessions  # noqa: E402
import time_to_accuracy as tta  # noqa: E402
from measure import summary  # noqa: E402


def test_a_step_past_its_limit_is_ended_with_every_process_it_started(tmp_path):
    child = tmp_path / "child"
    script = f"sleep 300 & echo $! > {child}; sleep 300"
    started = time.monotonic()
    with (tmp_path / "log").open("w") as sink:
        rc, facts = sessions.run_command(["bash", "-c", script], sink, 1.0, {}, tmp_path / "s")
    assert rc == sessions.TIMED_OUT and facts == {}
    assert time.monotonic() - started < 15
    pid = int(child.read_text())
    assert pid not in sessions.in_session(pid) and not sessions.in_session(pid)
    assert "time limit reached" in (tmp_path / "log").read_text()


def test_a_command_hands_its_facts_to_the_step(tmp_path):
    write = "import json, os; open(os.environ['GPU_CHECK_FACTS'], 'w').write(json.dumps({'x': 1}))"
    argv = [sys.executable, "-c", write]
    with (tmp_path / "log").open("w") as sink:
        rc, facts = sessions.run_command(argv, sink, 30, {}, tmp_path / "s")
    assert (rc, facts) == (0, {"x": 1})
    assert not list(tmp_path.glob("*.facts.json"))  # read and removed


JUNIT = """<testsuites><testsuite tests="{n}" failures="{f}" errors="0" skipped="{s}">
<testcase name="test_a"><skipped/></testcase>{case}</testsuite></testsuites>"""


@pytest.mark.parametrize(
    "n, f, s, case, status, expected",
    [
        (2, 0, 2, '<testcase name="test_b"><skipped/></testcase>', "PASS", "SKIP"),
        (2, 0, 1, '<testcase name="test_b"/>', "PASS", "PASS"),
        (2, 1, 1, '<testcase name="test_b"><failure/></testcase>', "FAIL", "FAIL"),
    ],
)
def test_pytest_steps_read_their_report(tmp_path, n, f, s, case, status, expected):
    junit = tmp_path / "step.junit.xml"
    junit.write_text(JUNIT.format(n=n, f=f, s=s, case=case))
    record = {"facts": {}}
    assert gpu_check.pytest_status(junit, record, status) == expected
    assert record["facts"]["pytest"]["failed"] == (["test_b"] if f else [])


def fake_bundle(folder):
    folder.mkdir()
    (folder / "a.txt").write_text("abc")
    manifest = {"files": {"a.txt": {"bytes": 3}}, "built_at": "now", "repository": "x"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_the_environment_runs_this_repositorys_swap_and_its_command(tmp_path):
    bundle = fake_bundle(tmp_path / "bundle")
    args = argparse.Namespace(bundle=bundle, work=tmp_path, python=sys.executable, no_site=True)
    gpu_bundle.install(args)
    python, command = tmp_path / "venv/bin/python", tmp_path / "venv/bin/swap"
    asked = "import importlib.metadata as m, swap; print(swap.__file__, m.version('swap'))"
    found = subprocess.run([python, "-c", asked], capture_output=True, text=True, check=True)
    where, version = found.stdout.split()
    assert where == str(REPO / "swap" / "__init__.py") and version != "absent"
    validated = subprocess.run([command, "validate", str(REPO / "configs" / "quickstart.yaml")],
                               capture_output=True, text=True)  # fmt: skip
    assert validated.returncode == 0, validated.stderr


def test_a_bundle_file_of_another_size_is_named_before_any_step(tmp_path):
    bundle = fake_bundle(tmp_path / "bundle")
    (bundle / "a.txt").write_text("ab")
    with pytest.raises(SystemExit, match="a.txt"):
        gpu_bundle.checked_bundle(bundle)


def test_install_runs_first_and_the_others_as_asked():
    args = argparse.Namespace(steps="average,quickstart", skip="")
    assert [s.name for s in gpu_check.selected(args)] == ["install", "quickstart", "average"]
    args = argparse.Namespace(steps="", skip="tta,throughput")
    assert "tta" not in [s.name for s in gpu_check.selected(args)]


def point(arm, budget, accuracy, seconds):
    return {"arm": arm, "budget": budget, "test_accuracy": summary([accuracy]),
            "val_accuracy": summary([accuracy]), "seconds": summary([seconds])}  # fmt: skip


def test_the_verdict_gives_each_swap_arm_its_ratio_and_its_margin_over_large_batches():
    points = [
        point("small", "12", 0.920, 100.0),
        point("large", "8", 0.900, 10.0),
        point("large", "24", 0.910, 30.0),
        point("swap-w4", "8+2", 0.919, 25.0),  # within 0.2 points, at 0.25x
        point("swap-w8", "8+2", 0.915, 40.0),  # 0.5 points short
    ]
    lines, short = tta.judge(points)
    assert "1.00 points below small-batch SGD's final" in lines[1]
    assert "SWAP W=4 reaches it at budget 8+2 in 25.0 s: 0.25x" in lines[2]
    assert lines[2].endswith("goal <= 0.3x: met")
    assert "+1.15 points" in lines[3]  # large-batch at 25 s: 90% + 15/20 of a point
    assert short[0].startswith("SWAP W=4 8+2: 0.25x small-batch SGD's time, -0.10 pts")
    assert short[1].endswith("(target NOT reached)")


def test_the_bench_starts_no_seed_it_cannot_finish_by_its_deadline():
    now = [0.0]
    seen = []
    for k in tta.seeds_in_time(argparse.Namespace(seeds=5, deadline=100), 0.0, lambda: now[0]):
        seen.append(k)
        now[0] += 30  # every seed takes 30 s
    assert seen == [0, 1, 2]  # a fourth would end at 120 s


def test_a_step_the_budget_cannot_fit_is_not_run_and_recorded_at_once(tmp_path):
    args = argparse.Namespace(budget=30, cpu=False, out=tmp_path)
    ctx = gpu_check.Context(args, gpu=False, python=sys.executable, swap="swap")
    step = gpu_check.Step("late", "needs a minute", (600, 600), lambda c, s: [["true"]], least=60)
    record = gpu_check.run_step(ctx, step)
    assert record["status"] == "NOT RUN" and record["commands"] == []
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["steps"][0]["status"] == "NOT RUN" and not saved["done"]
