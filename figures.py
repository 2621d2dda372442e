"""The relearning figure from stored sweep cells: a CSV of the series and, with matplotlib, a PNG.

matplotlib is an optional extra (``pip install matplotlib``): only the PNG needs it, so
the toolkit itself does not depend on it; without it the CSV is still written.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from eval.relearn import mean_series
from report import DATASET_NAMES, TUNED, csv_field, group_cells
from storage import write_bytes

# Acc(D_r) - Acc(D_f) levels read from the paper's relearning figure (approximate, digitised;
# docs/method.md): class removal, CaMU tracks Retrain there; random removal, Retrain's gap.
PAPER_LEVELS: dict[tuple[str, str], tuple[float, str]] = {
    ("fashion_mnist", "class"): (92.5, "paper: CaMU ~ Retrain"),
    ("cifar10", "class"): (85.0, "paper: CaMU ~ Retrain"),
    ("cifar100", "class"): (58.0, "paper: CaMU ~ Retrain (57-59)"),
    ("mnist", "random"): (0.75, "paper: Retrain"),
    ("fashion_mnist", "random"): (3.6, "paper: Retrain"),
    ("cifar10", "random"): (2.3, "paper: Retrain"),
    ("cifar100", "random"): (6.3, "paper: Retrain"),
}


def relearning_series(cells: list[dict[str, Any]], method_order: list[str] | tuple[str, ...] = ()
                      ) -> dict[tuple[str, str], dict[str, tuple[list[int], list[float], list[float], int]]]:
    """(dataset, scenario) -> method -> (steps, mean gap, std gap, seeds) over the cells that hold a series."""
    out: dict[tuple[str, str], dict[str, tuple[list[int], list[float], list[float], int]]] = {}
    for scene, by_method in group_cells(cells, method_order).items():
        for method, rows in by_method.items():
            series = [r["relearn"] for r in rows if r.get("relearn")]
            if series:
                steps, mean, std = mean_series(series)
                out.setdefault(scene, {})[method] = (steps, mean.tolist(), std.tolist(), len(series))
    return out


def series_csv(by_method: dict[str, tuple[list[int], list[float], list[float], int]]) -> str:
    lines = ["method,step,gap_mean,gap_std,seeds"]
    for method, (steps, mean, std, n) in by_method.items():
        lines += [f"{csv_field(method)},{s},{m!r},{repr(d) if n > 1 else ''},{n}"  # one seed: no spread to give
                  for s, m, d in zip(steps, mean, std, strict=True)]
    return "\n".join(lines) + "\n"


def figure_panels(by_method: dict[str, tuple[list[int], list[float], list[float], int]]
                  ) -> list[tuple[str, dict[str, tuple[list[int], list[float], list[float], int]]]]:
    """The figure's panels: one, or published settings beside tuned rows once tuned series exist.

    Twenty-odd series on one axis cannot be told apart, so tuned rows (``METHOD (tuned)``) get a
    panel of their own, with retrain drawn in both as the reference.
    """
    published = {m: s for m, s in by_method.items() if not m.endswith(TUNED)}
    tuned = {m: s for m, s in by_method.items() if m.endswith(TUNED)}
    if not tuned:
        return [("", published)]
    reference = {m: s for m, s in published.items() if m == "retrain"}
    return [("published settings", published), ("tuned (configs/tuned)", {**reference, **tuned})]


def method_colours(methods: list[str] | tuple[str, ...]) -> dict[str, str]:
    """One colour per method family (``bad_teacher`` and ``bad_teacher (tuned)`` share it); retrain black."""
    # matplotlib's ten, then colours none of them repeats (tab:olive and tab:cyan are C8 and C9)
    palette = [f"C{i}" for i in range(10)] + ["navy", "maroon", "darkgoldenrod", "lime", "magenta"]
    families: dict[str, str] = {"retrain": "black"}
    for method in methods:
        family = method.split(" (")[0]
        if family not in families:
            families[family] = palette[(len(families) - 1) % len(palette)]
    return {m: families[m.split(" (")[0]] for m in methods}


def line_styles(methods: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Solid for a method's published or tuned row; each ``--variant`` a dash pattern of its own, so variants of
    one method (one colour, one panel) stay apart: ``concept_poison (full)`` beside ``concept_poison``."""
    patterns: list[Any] = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]  # matplotlib linestyles
    variants: dict[str, Any] = {}
    styles: dict[str, Any] = {}
    for method in methods:
        base = method.removesuffix(TUNED)
        variant = base[len(base.split(" (")[0]):]
        if variant and variant not in variants:
            variants[variant] = patterns[len(variants) % len(patterns)]
        styles[method] = variants[variant] if variant else "-"
    return styles


def series_png(scene: tuple[str, str], by_method: dict[str, tuple[list[int], list[float], list[float], int]]
               ) -> bytes | None:
    """The figure as PNG bytes, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = figure_panels(by_method)
    colours, styles = method_colours(list(by_method)), line_styles(list(by_method))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), dpi=120, sharey=True, squeeze=False)
    dataset, scenario = scene
    for ax, (subtitle, series) in zip(axes[0], panels, strict=True):
        for method, (steps, mean, std, n) in series.items():
            colour = colours[method]
            ax.plot(steps, mean, marker="o", markersize=3, color=colour, linestyle=styles[method],
                    label=f"{method} ({n} seeds)")
            if n > 1:  # one seed has no spread: a band of width 0 would read as no variation
                ax.fill_between(steps, [m - d for m, d in zip(mean, std, strict=True)],
                                [m + d for m, d in zip(mean, std, strict=True)], color=colour, alpha=0.15)
        if scene in PAPER_LEVELS:
            level, label = PAPER_LEVELS[scene]
            ax.axhline(level, linestyle="--", color="black", linewidth=1, label=f"{label} ({level:g})")
        title = f"Relearning on D_r: {DATASET_NAMES.get(dataset, dataset)}, {scenario} removal"
        ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
        ax.set_xlabel("fine-tuning mini-batches (batch 32)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("Acc(D_r) - Acc(D_f)  (points)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_relearning(cells: list[dict[str, Any]], folder: Path, method_order: list[str] | tuple[str, ...] = (),
                     log: Any = print) -> list[Path]:
    """``relearn-DATASET-SCENARIO.csv`` (and ``.png`` with matplotlib) per scenario; returns the paths."""
    written: list[Path] = []
    missing_matplotlib = False
    for (dataset, scenario), by_method in relearning_series(cells, method_order).items():
        stem = folder / f"relearn-{dataset}-{scenario}"
        written.append(write_bytes(stem.with_suffix(".csv"), series_csv(by_method).encode()))
        png = series_png((dataset, scenario), by_method)
        if png is None:
            missing_matplotlib = True
        else:
            written.append(write_bytes(stem.with_suffix(".png"), png))
    if missing_matplotlib:
        log("relearning figures: CSV only; pip install matplotlib for the PNG")
    return written
