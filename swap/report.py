"""What a run shows: its results table and its plots (training curves, test accuracy per
model), all drawn from its results.json alone.

Run: swap report RUN_DIR   (`swap run` prints the same table and writes the same PNGs)
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from swap import storage
from swap.errors import SwapError
from swap.rundir import read_json
from swap.storage import join

TRAINING_PLOT = "training.png"  # loss and accuracy per epoch, phase 1 then each phase-2 worker
ACCURACY_PLOT = "accuracy.png"  # test accuracy: phase 1, each worker, the average
RELIABILITY_PLOT = "reliability.png"  # accuracy against confidence of the models phase 3 scored
PHASE1_COLOR, AVERAGE_COLOR = "dimgray", "black"  # workers: matplotlib's C0, C1, ...


def load_results(run_dir: str) -> dict[str, Any]:
    location = join(storage.absolute(run_dir), "results.json")
    if not storage.exists(location):
        raise SwapError(f"{run_dir}: not a run directory (it has no results.json)")
    return read_json(location)


def summary_table(results: dict[str, Any]) -> Table:
    """One row per model: phase 1, each phase-2 worker, the average before and after BN refresh,
    the greedy soup and the ensemble when phase 3 made them. NLL and ECE (test set) for the
    models phase 3 scored."""
    table = Table(title=f"swap · {results['name']} · run {results['run_id']}")
    for column in ("model", "test acc", "val acc", "NLL", "ECE", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    p1, p2, p3 = results.get("phase1"), results.get("phase2"), results.get("phase3")
    scored = {m["model"]: m["test"] for m in (p3 or {}).get("models", [])}

    def calibration(name: str) -> tuple[str, str]:
        test = scored.get(name)
        if not test or not test.get("count"):
            return "", ""
        return f"{test['nll']:.3f}", f"{test['ece']:.3f}"

    if p1:
        label = f"phase 1 · large batch · {p1['epochs']} epochs"
        table.add_row(
            label, _pct(p1["test_accuracy"]), _pct(p1["val_accuracy"]), *calibration("phase 1"),
            _s(p1),
        )  # fmt: skip
    if p2:
        for w in p2["workers"]:
            label = f"phase 2 · worker {w['index']}"
            if w["status"] != "finished":
                table.add_row(label, f"[red]{w['status']}[/]", "", "", "", "")
                continue
            table.add_row(
                _flagged(label, w), _pct(w["test_accuracy"]), _pct(w["val_accuracy"]),
                *calibration(f"worker {w['index']}"), _s(w),
            )  # fmt: skip
        table.add_row("phase 2 · wall clock", "", "", "", "", _s(p2), end_section=True)
    if p3:
        n = len(p3["averaged_workers"])
        if bn_refreshed(p3):
            before, val_before = p3["test_accuracy_before_bn"], p3["val_accuracy_before_bn"]
            table.add_row(f"average of {n} · before BN refresh", _pct(before), _pct(val_before))
        greedy = p3.get("combine") == "greedy"
        if greedy:
            uniform = scored.get("uniform average", {})
            candidates = len(p3["candidates"])
            table.add_row(
                f"uniform average of {candidates}", _pct(uniform.get("accuracy")),
                _pct(_val(p3, "uniform average")), *calibration("uniform average"),
            )  # fmt: skip
        name = "greedy soup" if greedy else "uniform average"
        table.add_row(
            _flagged(f"[bold]{'greedy soup' if greedy else 'average'} of {n} · SWAP model[/]", p3),
            f"[bold]{_pct(p3['test_accuracy'])}[/]", _pct(p3["val_accuracy"]),
            *calibration(name), _s(p3),
        )  # fmt: skip
        if "ensemble" in scored:
            table.add_row(
                f"ensemble of {len(p3['candidates'])} workers",
                _pct(scored["ensemble"].get("accuracy")), _pct(_val(p3, "ensemble")),
                *calibration("ensemble"),
            )  # fmt: skip
        samples = p3.get("swag_samples")
        for name in [n for n in scored if n.startswith("swag worker ")] + ["multiswag"]:
            if name in scored:
                multi = name == "multiswag"
                kind = "MultiSWAG" if multi else f"SWAG · {name[5:]}"
                seconds = f"{p3['swag_seconds']:.1f}" if multi else ""
                table.add_row(
                    f"{kind} · {samples} draws{' each' if multi else ''}",
                    _pct(scored[name].get("accuracy")),
                    _pct(_val(p3, name)), *calibration(name), seconds,
                )  # fmt: skip
    return table


def _flagged(label: str, record: dict[str, Any]) -> str:
    """A model's row label, marked when results.json warns about it (no better than chance)."""
    return f"{label} [yellow]⚠ chance[/]" if record.get("warning") else label


def warnings(results: dict[str, Any]) -> list[str]:
    """The warnings results.json records, one line each, naming the model."""
    lines = [
        f"phase 2 · worker {w['index']}: {w['warning']}"
        for w in (results.get("phase2") or {}).get("workers", [])
        if w.get("warning")
    ]
    p3 = results.get("phase3") or {}
    if p3.get("warning"):
        lines.append(f"the SWAP model: {p3['warning']}")
    return lines


def bn_refreshed(p3: dict[str, Any]) -> bool:
    """Whether phase 3 refreshed BatchNorm statistics (not with phase3.bn_refresh: false, nor
    for a model without BatchNorm): only then is there an average "before" it."""
    return bool(p3.get("bn_batches"))


def _val(p3: dict[str, Any], name: str) -> float | None:
    for model in p3.get("models", []):
        if model["model"] == name:
            return model["val"].get("accuracy")
    return None


def print_summary(results: dict[str, Any], console: Console) -> None:
    console.print(summary_table(results))
    for line in warnings(results):
        console.print(f"[yellow]⚠ {line}[/]", soft_wrap=True)
    total = results.get("total_seconds")
    if total is not None:
        console.print(f"total {total:.1f}s · run directory {results['run_dir']}", soft_wrap=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _s(section: dict[str, Any]) -> str:
    return f"{section['seconds']:.1f}"


def write_report(
    results: dict[str, Any], run_dir: str, console: Console | None = None
) -> list[str]:
    """Draw the run's plots and write them into `run_dir` (local or a storage URI); say where
    on `console`. Returns their locations."""
    written = []
    plots = (
        (TRAINING_PLOT, training_figure),
        (ACCURACY_PLOT, accuracy_figure),
        (RELIABILITY_PLOT, reliability_figure),
    )
    for name, draw in plots:
        figure = draw(results)
        if figure is None:
            continue
        location = join(storage.absolute(run_dir), name)
        storage.write_bytes(location, png_bytes(figure))
        written.append(location)
    if console is not None and written:
        console.print(f"plots: {', '.join(written)}", soft_wrap=True)
    return written


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure outside pyplot: no display, no global backend switched (a notebook
    that imports swap keeps its own); savefig renders it with Agg."""
    return Figure(figsize=(width, height))


def worker_color(index: int) -> str:
    """The same color for a worker in every plot (matplotlib's ten-color cycle)."""
    return f"C{index % 10}"


def training_figure(results: dict[str, Any]) -> Any | None:
    """Training loss and accuracy per epoch: phase 1, then every phase-2 worker continuing from
    phase 1's last epoch. Each model's test value is a marker at its last epoch; the averaged
    (SWAP) model is a star at the end of phase 2. None when no epoch was recorded."""
    p1 = results.get("phase1") or {}
    workers = [w for w in (results.get("phase2") or {}).get("workers", []) if w.get("history")]
    if not p1.get("history") and not workers:
        return None
    figure = new_figure(11, 4.2)
    loss_axes, acc_axes = figure.subplots(1, 2)
    offset = len(p1.get("history", []))
    curves = [("phase 1", p1, 0, PHASE1_COLOR)] if p1.get("history") else []
    for w in workers:
        curves.append((f"worker {w['index']}", w, offset, worker_color(w["index"])))
    last_epoch = offset
    for label, section, start, color in curves:
        epochs = [start + h["epoch"] for h in section["history"]]
        last_epoch = max(last_epoch, epochs[-1])
        loss = [h["train_loss"] for h in section["history"]]
        accuracy = [100 * h["train_accuracy"] for h in section["history"]]
        loss_axes.plot(epochs, loss, color=color, label=label)
        acc_axes.plot(epochs, accuracy, color=color, label=label)
        if section.get("test_accuracy") is not None:
            loss_axes.plot(epochs[-1], section["test_loss"], "o", color=color, mfc="none")
            acc_axes.plot(epochs[-1], 100 * section["test_accuracy"], "o", color=color, mfc="none")
    p3 = results.get("phase3")
    if p3:
        n = len(p3["averaged_workers"])
        star = {"marker": "*", "color": AVERAGE_COLOR, "markersize": 15, "linestyle": "none"}
        loss_axes.plot(last_epoch, p3["test_loss"], label=f"average of {n} (test)", **star)
        acc_axes.plot(last_epoch, 100 * p3["test_accuracy"], label=f"average of {n} (test)", **star)
    if offset and workers:
        for axes in (loss_axes, acc_axes):
            axes.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="training loss (lines), test loss (o)")
    loss_axes.set_yscale("log")
    acc_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="training accuracy, test (o)")
    for axes in (loss_axes, acc_axes):
        axes.grid(alpha=0.3)
    acc_axes.legend(fontsize="small", loc="lower right")
    figure.suptitle(f"swap · {results['name']} · run {results['run_id']}")
    figure.tight_layout()
    return figure


def accuracy_bars(results: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(label, test accuracy, color) per model that has one, in the results table's order."""
    bars = []
    p1 = results.get("phase1")
    if p1 and p1.get("test_accuracy") is not None:
        bars.append(("phase 1", p1["test_accuracy"], PHASE1_COLOR))
    for w in (results.get("phase2") or {}).get("workers", []):
        if w.get("status") == "finished":
            bars.append((f"worker {w['index']}", w["test_accuracy"], worker_color(w["index"])))
    p3 = results.get("phase3")
    if p3:
        if bn_refreshed(p3) and p3.get("test_accuracy_before_bn") is not None:
            bars.append(("average\nbefore BN", p3["test_accuracy_before_bn"], "darkgray"))
        bars.append(("average\n(SWAP)", p3["test_accuracy"], AVERAGE_COLOR))
    return bars


def accuracy_figure(results: dict[str, Any]) -> Any | None:
    """Test accuracy as bars: phase 1, each finished worker, the average before and after the
    BN refresh. None when no model was evaluated."""
    bars = accuracy_bars(results)
    if not bars:
        return None
    figure = new_figure(max(5.0, 1.0 + 0.9 * len(bars)), 4.2)
    axes = figure.subplots()
    labels, values, colors = zip(*bars, strict=True)
    percent = [100 * v for v in values]
    drawn = axes.bar(range(len(bars)), percent, color=colors)
    axes.bar_label(drawn, labels=[f"{p:.2f}" for p in percent], fontsize="small")
    axes.set_xticks(range(len(bars)), labels, fontsize="small")
    # Zoom on the differences: they are what the plot is for, and often under a point.
    low, high = min(percent), max(percent)
    bottom = max(0.0, low - max(2.0, (100 - low) * 0.5))
    axes.set_ylim(bottom, high + 0.12 * (high - bottom))  # headroom for the labels
    axes.set(ylabel="test accuracy (%)", title="test accuracy: workers vs their average")
    axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"swap · {results['name']} · run {results['run_id']}")
    figure.tight_layout()
    return figure


def reliability_figure(results: dict[str, Any]) -> Any | None:
    """The reliability diagram (test set): per confidence bin, the accuracy of the examples in
    it, for phase 1, the final model, the uniform average and the ensemble when there (workers
    too, thin). On the diagonal a model is calibrated; ECE in the legend. None without scores."""
    models = (results.get("phase3") or {}).get("models", [])
    scored = [m for m in models if m["test"].get("count")]
    if not scored:
        return None
    figure = new_figure(5.6, 5.2)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    for model in scored:
        name, test = model["model"], model["test"]
        bins = [b for b in test["bins"] if b["count"]]
        style = _reliability_style(name)
        axes.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            label=f"{name} (ECE {test['ece']:.3f})",
            **style,
        )
    axes.set(
        xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
        title="reliability on the test set (15 bins)",
    )  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small", loc="upper left")
    figure.suptitle(f"swap · {results['name']} · run {results['run_id']}")
    figure.tight_layout()
    return figure


def _reliability_style(name: str) -> dict[str, Any]:
    if name.startswith(("worker ", "swag worker ")):
        style = {"linewidth": 0.8, "alpha": 0.6, "linestyle": "--" if "swag" in name else "-"}
        return {"color": worker_color(int(name.split()[-1])), **style}
    colors = {"phase 1": PHASE1_COLOR, "ensemble": "tab:purple", "greedy soup": "tab:red",
              "multiswag": "tab:green"}  # fmt: skip
    return {"color": colors.get(name, AVERAGE_COLOR), "linewidth": 2, "marker": "o"}
