"""Draw a ladder forecast: accuracy against training compute, per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from assay.corpora.atomic import atomic_path
from assay.predictors.ladder import LadderPredictor


def plot_forecast(
    predictor: LadderPredictor,
    n: float,
    d: float,
    path: str | Path,
    composed: dict[str, dict] | None = None,
    composed_label: str = "composed forecast",
) -> Path:
    """One panel per task: the observed ladder runs (final checkpoints), the chained fit and its
    interval band along the target's tokens-per-parameter ratio, and the target with its interval.

    The curve is the ladder's own data. ``composed`` (task -> row with predicted, lower, upper),
    when given, adds the forecast `assay forecast` prints — the ladder shifted for the mixture —
    as a second marker, so the picture shows what the table shows.

    Compute is C = 6 N D. Written atomically; the format follows the file extension (png, pdf, svg).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    tasks = list(predictor.fits_)
    points = pl.DataFrame(predictor.fitted_on_.get("final_points") or [], schema_overrides={"n": pl.Float64})
    ratio = d / n
    c_target = 6 * n * d
    c_low = float((6 * points["n"] * points["d"]).min()) if points.height else c_target / 1e3
    compute = np.logspace(np.log10(min(c_low, c_target)), np.log10(c_target * 2), 60)
    n_curve = np.sqrt(compute / (6 * ratio))
    curve = predictor.predict(pl.DataFrame({"n": n_curve, "d": n_curve * ratio}))
    target = predictor.predict(pl.DataFrame({"n": [float(n)], "d": [float(d)]}))

    cols = 4 if len(tasks) > 4 else len(tasks)
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    sizes = sorted(points["n"].unique().to_list()) if points.height else []
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))
    for ax, task in zip(axes.flat, tasks):
        c = curve.filter(pl.col("task") == task)
        ax.fill_between(compute, c["lower"], c["upper"], color="tab:blue", alpha=0.2, lw=0)
        ax.plot(compute, c["predicted"], color="tab:blue", lw=1.5, label=f"fit, D/N = {ratio:.0f}")
        for size, color in zip(sizes, colors):
            p = points.filter((pl.col("task") == task) & (pl.col("n") == size))
            ax.scatter(6 * p["n"] * p["d"], p["acc"], s=14, color=color, label=f"{size / 1e9:.2g}B runs")
        t = target.filter(pl.col("task") == task).row(0, named=True)
        err = [[t["predicted"] - t["lower"]], [t["upper"] - t["predicted"]]]
        ax.errorbar(
            [c_target],
            [t["predicted"]],
            yerr=err,
            fmt="*",
            color="tab:red",
            ms=10,
            capsize=3,
            label="ladder at target",
        )
        row = (composed or {}).get(task)
        if row is not None and row.get("lower") is not None:
            err = [[row["predicted"] - row["lower"]], [row["upper"] - row["predicted"]]]
            ax.errorbar(
                [c_target * 1.25],
                [row["predicted"]],
                yerr=err,
                fmt="D",
                color="tab:green",
                ms=6,
                capsize=3,
                label=composed_label,
            )
        ax.axhline(predictor.fits_[task].chance, color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("compute 6ND (FLOPs)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    what = f"; green diamond: {composed_label}" if composed else " (ladder data only)"
    fig.suptitle(f"N = {n:.3g}, D = {d:.3g}: ladder curve and red star{what}", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"), dpi=110)
    plt.close(fig)
    return path
