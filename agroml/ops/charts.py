"""Charts of the feedback series (``stats --by ... --plot`` and the monitoring page), as PNG bytes.

Why bytes: the monitoring page embeds its charts as data URIs (one self-contained file), and
``--plot`` writes the same bytes atomically to a file. matplotlib is imported inside the functions
(Agg backend: servers and cron have no display), so importing agroml stays fast.

What a reader must see at a glance: the accuracy line with its Wilson 95% band (a wide band is a
month with few answers, not a crisis), dashed lines where a new production model went live, and the
volume underneath (predictions, trainable rows added, feedback rate).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agroml.core.errors import OutputError
from agroml.core.files import atomic_write

_ACC, _BAND, _DEPLOY = "#08519c", "#9ecae1", "#d94801"
_ROWS, _TRAIN, _RATE = "#c6dbef", "#2171b5", "#41ab5d"


def png_bytes(draw: Callable[[Any], None], size: tuple[float, float], dpi: int = 100) -> bytes:
    """Draw on a new figure with ``draw(fig)`` and return it as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, layout="constrained")
    try:
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def write_png(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path`` atomically (a reader never sees half a PNG); an unwritable path is an OutputError."""
    path = Path(path)
    fix = "choose a writable file path"
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", fix=fix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", fix=fix) from None
    return path


def _ticks(ax: Any, labels: list[str]) -> None:
    step = max(1, len(labels) // 12)  # about a dozen labels, whatever the number of periods
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _deployments(ax: Any, block: dict[str, Any], index: dict[str, int], label: bool) -> None:
    for i, mark in enumerate(m for m in block["deployments"] if m["period"] in index):
        x = index[mark["period"]]
        ax.axvline(x, color=_DEPLOY, linestyle="--", linewidth=1.2, label="new production model" if i == 0 else None)
        if label:
            ax.annotate(
                str(mark["run_id"])[:24],
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=_DEPLOY,
            )


def draw_accuracy(ax: Any, block: dict[str, Any], title: str) -> None:
    """Feedback accuracy per period with its Wilson 95% band and the deployments; per-class lines thin."""
    periods = block["periods"]
    labels = [p["period"] for p in periods]
    index = {p: i for i, p in enumerate(labels)}
    xs = range(len(periods))
    acc = [p["feedback_accuracy"] for p in periods]
    low = [p["ci_low"] if p["ci_low"] is not None else float("nan") for p in periods]
    high = [p["ci_high"] if p["ci_high"] is not None else float("nan") for p in periods]
    ax.fill_between(xs, low, high, color=_BAND, alpha=0.6, label="95% interval (Wilson)", step=None)
    for cls in block["classes"]:
        values = [p["classes"].get(cls, {}).get("feedback_accuracy") for p in periods]
        ax.plot(xs, [float("nan") if v is None else v for v in values], linewidth=0.8, alpha=0.55, label=cls)
    ax.plot(xs, [float("nan") if v is None else v for v in acc], color=_ACC, linewidth=2.2, marker="o", ms=3,
            label="all classes")  # fmt: skip
    _deployments(ax, block, index, label=True)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_ylabel("feedback accuracy")
    ax.set_title(title, loc="left", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _ticks(ax, labels)
    ax.legend(fontsize=7, ncol=4, loc="lower left", framealpha=0.8)


def draw_volume(ax: Any, block: dict[str, Any], title: str) -> None:
    """Predictions and trainable rows added per period (bars), feedback rate (line, right axis), deployments."""
    periods = block["periods"]
    labels = [p["period"] for p in periods]
    xs = list(range(len(periods)))
    ax.bar(xs, [p["predictions"] for p in periods], color=_ROWS, label="predictions")
    ax.bar(xs, [p["trainable"] for p in periods], width=0.45, color=_TRAIN, label="trainable rows added")
    _deployments(ax, block, {p: i for i, p in enumerate(labels)}, label=False)
    ax.set_ylabel("rows")
    ax.set_title(title, loc="left", fontsize=10)
    rate = ax.twinx()
    rate.plot(xs, [float("nan") if p["feedback_rate"] is None else p["feedback_rate"] for p in periods],
              color=_RATE, linewidth=1.5, label="feedback rate")  # fmt: skip
    rate.set_ylim(0, 1.02)
    rate.yaxis.set_major_formatter(_percent())
    rate.set_ylabel("feedback rate")
    _ticks(ax, labels)
    handles = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.8)


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def timeline_png(report: dict[str, Any]) -> bytes:
    """The whole ``stats --by`` report: per model type, accuracy over time above its volume."""
    models = report["models"]

    def draw(fig: Any) -> None:
        axes = fig.subplots(2 * len(models), 1, squeeze=False)[:, 0]
        for i, (model, block) in enumerate(models.items()):
            if not block["periods"]:
                _empty(axes[2 * i], f"{model}: no rows")
                _empty(axes[2 * i + 1], "")
                continue
            draw_accuracy(axes[2 * i], block, f"{model}: feedback accuracy per {report['by']} (deployed model)")
            draw_volume(axes[2 * i + 1], block, f"{model}: predictions, trainable rows added, feedback rate")

    return png_bytes(draw, (11, 3.4 * 2 * len(models)))


def accuracy_png(block: dict[str, Any], title: str) -> bytes:
    """One model's accuracy chart (the monitoring page)."""
    return png_bytes(lambda fig: draw_accuracy(fig.add_subplot(), block, title), (11, 3.8))


def volume_png(block: dict[str, Any], title: str) -> bytes:
    """One model's volume chart (the monitoring page)."""
    return png_bytes(lambda fig: draw_volume(fig.add_subplot(), block, title), (11, 3.2))


__all__ = ["accuracy_png", "draw_accuracy", "draw_volume", "png_bytes", "timeline_png", "volume_png", "write_png"]
