"""PNG charts (matplotlib, Agg backend, imported lazily so importing agroml stays fast).

Why files and not windows: agroml runs on servers and in cron; a PNG can be attached to a model card
or a chat message. Every chart is written to a temporary file in the target folder and renamed into
place, so a reader never sees half a PNG, and an unwritable path is an OutputError naming it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agroml.core.errors import OutputError
from agroml.core.files import atomic_write


def _save_atomically(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` through :func:`atomic_write` (a temporary sibling, then a rename).

    Rendered in memory first: a chart is small, and atomic_write gives the file the umask's permissions
    (a temporary file of its own would stay 0600, unreadable to the account that serves the run).
    """
    path = Path(path)
    fix = "choose a writable file path"
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", fix=fix)
    blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot write {path}: {blocker} is not a folder", fix=fix)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    try:
        atomic_write(path, buf.getvalue())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", fix=fix) from None
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _with_figure(draw: Callable[[Any], Any], path: Path, size: tuple[float, float]) -> Path:
    plt = _pyplot()
    fig = plt.figure(figsize=size, layout="constrained")
    try:
        draw(fig)
        return _save_atomically(fig, path)
    finally:
        plt.close(fig)


# --- distribution (agroml distribution --plot) ------------------------------------------------------
_ROWS_COLOR, _TRAIN_COLOR = "#9ecae1", "#2171b5"
_SEASON_MONTHS = {"transition": "Jan-Feb", "long_rains": "Mar-May", "dry_season": "Jun-Sep", "short_rains": "Oct-Dec"}


def _draw_counts(ax: Any, report: dict[str, Any]) -> None:
    items = report["counts"][:25]  # a readable chart; the table and --json have every value
    if not items:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    keys = [str(i["key"]) for i in items][::-1]
    rows = [i["rows"] for i in items][::-1]
    train = [i["trainable"] for i in items][::-1]
    pos = range(len(keys))
    ax.barh(pos, rows, color=_ROWS_COLOR, label="rows")
    ax.barh(pos, train, height=0.45, color=_TRAIN_COLOR, label="trainable")
    ax.set_yticks(list(pos), keys)
    ax.set_ylim(-0.6, max(len(keys), 3) - 0.4)  # a lone bar keeps a bar's width instead of filling the panel
    for y, n in zip(pos, rows, strict=True):
        ax.text(n, y, f" {n:,}", va="center", fontsize=8)
    ax.margins(x=0.12)
    rows_note = " (rows: predicted class, trainable: training label)" if report["by"] == "class" else ""
    ax.set_title(
        f"Rows by {report['by']}{rows_note}"
        + (f", top 25 of {len(report['counts'])}" if len(report["counts"]) > 25 else ""),
        fontsize=10,
    )
    ax.set_xlabel("rows")
    ax.legend(loc="lower right", fontsize=8)


def _draw_heatmap(ax: Any, fig: Any, report: dict[str, Any]) -> None:
    table = report["class_season"]["rows"]
    seasons = report["seasons"]
    if not table:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    classes = list(table)[:20]
    grid = [[table[c][s] for s in seasons] for c in classes]
    # colour = share of the class's own rows, so a rare class's seasonal peak shows as clearly as a common one's
    shares = [[n / (sum(row) or 1) for n in row] for row in grid]
    image = ax.imshow(shares, aspect="auto", cmap="YlGn", vmin=0, vmax=1)
    ax.set_xticks(range(len(seasons)), [f"{s.replace('_', ' ')}\n({_SEASON_MONTHS.get(s, '')})" for s in seasons])
    ax.set_yticks(range(len(classes)), classes)
    for y, row in enumerate(grid):
        for x, n in enumerate(row):
            ax.text(
                x,
                y,
                f"{n}\n{shares[y][x]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[y][x] > 0.6 else "black",
            )
    ax.set_title("Predicted class x season: rows and share of the class", fontsize=10)
    ax.set_xlabel(f"season (local time, {report['timezone']})")
    fig.colorbar(image, ax=ax, label="share of the class's rows", shrink=0.8, format="{x:.0%}")


def _draw_months(ax: Any, report: dict[str, Any]) -> None:
    months = report["months"]
    if not months:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels = [m["month"] for m in months]
    pos = range(len(labels))
    ax.bar(pos, [m["rows"] for m in months], color=_ROWS_COLOR, label="rows")
    ax.plot(pos, [m["trainable"] for m in months], color=_TRAIN_COLOR, marker="o", markersize=3, label="trainable")
    step = max(1, len(labels) // 24)  # at most ~24 tick labels, so they stay legible
    ax.set_xticks(list(pos)[::step], labels[::step], rotation=60, ha="right", fontsize=8)
    ax.set_title(f"Rows per month (local time, {report['timezone']})", fontsize=10)
    ax.set_ylabel("rows")
    ax.legend(loc="upper left", fontsize=8)


def distribution_png(report: dict[str, Any], path: Path) -> Path:
    """Render a ``distribution_report`` as one PNG: bars by key, class x season heatmap, month series."""

    def draw(fig: Any) -> None:
        grid = fig.add_gridspec(2, 2, height_ratios=[1.4, 1])
        _draw_counts(fig.add_subplot(grid[0, 0]), report)
        _draw_heatmap(fig.add_subplot(grid[0, 1]), fig, report)
        _draw_months(fig.add_subplot(grid[1, :]), report)
        window = ""
        if report.get("since") or report.get("until"):
            window = f", {(report.get('since') or '…')[:10]} to {(report.get('until') or '…')[:10]}"
        fig.suptitle(
            f"{report['model_type']}: {report['total']} rows, {report['trainable']} trainable "
            f"(source {report['source']}{window}; generated {report['generated_at'][:16]}Z)",
            fontsize=12,
        )

    return _with_figure(draw, path, (13, 9))


# --- model plots (agroml train / agroml evaluate) -----------------------------------------------------
def confusion_matrix_png(cm: Any, class_names: list[str], path: Path) -> Path:
    """A confusion matrix (rows = true class, columns = predicted): counts in each cell, colour = row share.

    Why colour by row share: with imbalanced classes raw counts make the big class glow and hide a
    small class that is always wrong; the share of each true class (recall on the diagonal) does not.
    """
    import numpy as np

    matrix = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    side = min(18.0, max(4.5, 0.55 * k + 2.5))
    font = 9 if k <= 12 else (7 if k <= 25 else 5)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(k), class_names, fontsize=font)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        for y in range(k):
            for x in range(k):
                if matrix[y, x]:
                    ax.text(
                        x,
                        y,
                        str(matrix[y, x]),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if share[y, x] > 0.55 else "black",
                    )
        correct, total = int(np.trace(matrix)), int(matrix.sum())
        accuracy = f"{correct / total:.1%}" if total else "n/a"
        ax.set_title(f"Confusion matrix: {total} images, accuracy {accuracy}", fontsize=10)
        fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)

    return _with_figure(draw, path, (side + 1.2, side))


def training_curves_png(history: dict[str, list[float]], path: Path, phase_boundary: int | None = None) -> Path:
    """Loss and accuracy per epoch, train against validation, with a line where fine-tuning began.

    ``history`` holds Keras-style keys (loss, val_loss, accuracy, val_accuracy; other metrics are
    ignored). The phase boundary is ``phase_boundary`` (the number of phase-1 epochs) or, if absent,
    taken from a per-epoch ``phase`` list in ``history``.
    """
    if phase_boundary is None and history.get("phase"):
        phases = list(history["phase"])
        phase_boundary = next((i for i in range(1, len(phases)) if phases[i] != phases[i - 1]), None)
    panels = [("loss", "Loss"), ("accuracy", "Accuracy")]

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2)
        for ax, (key, title) in zip(axes, panels, strict=True):
            drawn = False
            for name, label, style in ((key, "train", "-"), (f"val_{key}", "validation", "--")):
                values = [float("nan") if v is None else float(v) for v in history.get(name, [])]
                if values:
                    epochs = range(1, len(values) + 1)
                    ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
            if phase_boundary:
                ax.axvline(phase_boundary + 0.5, color="grey", linestyle=":", linewidth=1)
                ax.text(
                    phase_boundary + 0.6,
                    0.98,
                    "fine-tuning",
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=8,
                    color="grey",
                )
            if key == "accuracy" and drawn:
                ax.set_ylim(0, 1.02)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if drawn:
                ax.legend(fontsize=8)
            epochs_seen = max((len(v) for k, v in history.items() if k != "phase"), default=0)
            if epochs_seen:  # whole epochs only; matplotlib would show 0.96..1.04 for a single epoch
                ax.set_xlim(0.5, epochs_seen + 0.5)
                step = max(1, round(epochs_seen / 12))
                ax.set_xticks(range(1, epochs_seen + 1, step))

    return _with_figure(draw, path, (10, 4))
