"""Figures of the study (needs matplotlib: ``pip install 'groupinf[plots]'``).

Every figure is written as PNG with the non-interactive Agg backend.
"""

from __future__ import annotations

import os

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as exc:  # pragma: no cover - depends on extras
    raise ImportError(
        "figures need matplotlib: pip install 'groupinf[plots]'"
    ) from exc

from . import metrics


def _save(fig, path, rect=None):
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kind_colours(kinds):
    uniq = sorted(set(kinds))
    cmap = plt.get_cmap("tab10")
    return {k: cmap(i % 10) for i, k in enumerate(uniq)}


def scatter_grid(path, title, pred_q, act_q, kinds, names=None):
    """Predicted vs actual per quantity, coloured by group type, y = x line."""

    names = names or list(act_q)
    n = len(names)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows),
                             squeeze=False)
    colours = _kind_colours(kinds)
    kinds = np.asarray(kinds)
    for ax, q in zip(axes.ravel(), names):
        a, p = act_q[q], pred_q[q]
        for k, c in colours.items():
            sel = kinds == k
            ax.scatter(a[sel], p[sel], s=10, color=c, label=k, alpha=0.8)
        lo = float(min(a.min(), p.min()))
        hi = float(max(a.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        rho = metrics.agreement(p, a)["spearman"]
        ax.set_title(f"{q}  rho={rho:.2f}", fontsize=9)
        ax.set_xlabel("actual", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)),
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path, rect=(0, 0.06, 1, 0.96))


def leverage_hist(path, title, leverage, kinds):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    kinds = np.asarray(kinds)
    colours = _kind_colours(kinds)
    bins = np.linspace(0, max(1e-9, float(leverage.max())), 30)
    ax.hist([leverage[kinds == k] for k in colours], bins=bins, stacked=True,
            color=list(colours.values()), label=list(colours))
    ax.set_xlabel("largest eigenvalue of H^-1/2 H_U H^-1/2")
    ax.set_ylabel("groups")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def sweep_plot(path, title, rows):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    x = [r["l2_over_n"] for r in rows]
    for tier, style in (("first-order", "-o"), ("newton", "--s")):
        for q in ("self_loss", "test_loss[0]", "param_norm"):
            y = [r.get(tier, {}).get(q, np.nan) if isinstance(r.get(tier), dict)
                 else np.nan for r in rows]
            ax.semilogx(x, y, style, label=f"{tier}: {q}", ms=4)
    ax.set_xlabel("l2_reg / n")
    ax.set_ylabel("Spearman, predicted vs actual")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6)
    return _save(fig, path)


def study_figures(out, title, preds, actual, kinds, result):
    from .study import quantities

    qa = quantities(actual)
    files = []
    for tier, fname in (("first-order", "pred_vs_actual.png"),
                        ("newton", "newton_vs_actual.png")):
        if tier in preds:
            files.append(scatter_grid(os.path.join(out, fname),
                                      f"{title}: {tier} vs retraining",
                                      quantities(preds[tier]), qa, kinds))
    lev = preds["newton"].leverage_max if "newton" in preds else None
    if lev is not None:
        files.append(leverage_hist(os.path.join(out, "leverage.png"),
                                   f"{title}: group leverage", lev, kinds))
    if result.get("sweep_l2"):
        files.append(sweep_plot(os.path.join(out, "spearman_vs_l2.png"),
                                f"{title}: accuracy vs regularisation",
                                result["sweep_l2"]))
    return files
