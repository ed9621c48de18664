"""What a finished run prints: the results table; and the versions every run records.

Run: swap report RUN_DIR   (prints this table for a saved run)
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rich.console import Console
from rich.table import Table


def versions() -> dict[str, str]:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "torch": installed("torch"),
        "ray": installed("ray"),
        "swap": installed("swap"),
    }


def summary_table(results: dict[str, Any]) -> Table:
    """One row per model: phase 1, each phase-2 worker, the average before and after BN refresh."""
    table = Table(title=f"swap · {results['name']} · run {results['run_id']}")
    table.add_column("model")
    table.add_column("test acc", justify="right")
    table.add_column("val acc", justify="right")
    table.add_column("seconds", justify="right")
    p1, p2, p3 = results.get("phase1"), results.get("phase2"), results.get("phase3")
    if p1:
        label = f"phase 1 · large batch · {p1['epochs']} epochs"
        table.add_row(label, _pct(p1["test_accuracy"]), _pct(p1["val_accuracy"]), _s(p1))
    if p2:
        for w in p2["workers"]:
            label = f"phase 2 · worker {w['index']} (seed {w['seed']})"
            if w["status"] != "finished":
                table.add_row(label, f"[red]{w['status']}[/]", "", "")
                continue
            table.add_row(label, _pct(w["test_accuracy"]), _pct(w["val_accuracy"]), _s(w))
        table.add_row("phase 2 · wall clock", "", "", _s(p2), end_section=True)
    if p3:
        n = len(p3["averaged_workers"])
        before, after = p3["test_accuracy_before_bn"], p3["test_accuracy"]
        val_before = p3["val_accuracy_before_bn"]
        table.add_row(f"average of {n} · before BN refresh", _pct(before), _pct(val_before), "")
        table.add_row(
            f"[bold]average of {n} · SWAP model[/]",
            f"[bold]{_pct(after)}[/]",
            _pct(p3["val_accuracy"]),
            _s(p3),
        )
    return table


def print_summary(results: dict[str, Any], console: Console) -> None:
    console.print(summary_table(results))
    total = results.get("total_seconds")
    if total is not None:
        console.print(f"total {total:.1f}s · run directory {results['run_dir']}", soft_wrap=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _s(section: dict[str, Any]) -> str:
    return f"{section['seconds']:.1f}"
