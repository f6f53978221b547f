"""The two case studies of ``groupinf experiment --case``.

``--case dependence --feature F``: which training data made the learned model
depend on feature F? The model's dependence D (see `groupinf.dependence`) is
traced back to every training point (first-order) and to groups: attribute
values, the points most responsible for D and most opposed to it, the single
most responsible points, the unions of the top-ranked attribute groups, and
random groups for reference. Every group is removed and the model refitted,
so predicted and actual changes of D stand side by side. Outputs in
``--out``: ``groups.csv`` (ranked), ``points.csv``, ``point_effects.npz``,
``metrics.json``, ``summary.txt`` and ``dependence.png``.

``--case sources``: credit assignment to data sources (`groupinf.sources`).
Without ``--source-column`` (dataset ``spam``): weak supervision by keyword
and header labeling functions, one group per function. With
``--source-column C``: one group per value of column C of any dataset.
Outputs: ``sources.csv``, ``metrics.json``, ``summary.txt``,
``pred_vs_actual.png``, ``effect_vs_coverage.png`` and
``effect_vs_precision.png`` (labeling functions) or
``effect_vs_agreement.png`` (columns).

Retraining results are saved with a fingerprint of the run's settings and
its groups, so re-running the same command reuses them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time

import numpy as np
import scipy.sparse as sp

from . import groups as G, metrics
from . import sources as S
from ._influence import influence
from ._model import fit
from ._newton import SingularHessianError
from ._retrain import retrain
from .dependence import dependence, point_effects, resolve_feature
from .model_selection import cross_validate_l2
from .study import (_drop_invalid, _load_effects, _save_effects, _top_features,
                    json_safe, load_any, write_json)

# The Hessian is a dense (p, p) matrix: wider data (bag of words) is cut to
# its most frequent columns unless --max-features says otherwise.
DEFAULT_MAX_FEATURES = 1000
TIERS = ("first-order", "newton")


# ---------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------


def _load(dataset, max_features, say):
    data = load_any(dataset, max_features)
    d = data.X_train.shape[1]
    if max_features is None and d > DEFAULT_MAX_FEATURES:
        data = _top_features(data, DEFAULT_MAX_FEATURES)
        say(f"{data.name}: keeping the {DEFAULT_MAX_FEATURES} most frequent of "
            f"{d} features (the Hessian is dense; --max-features to change)")
    return data


def _choose_l2(l2_reg, choose, say, out=None, same=None):
    """Given, or by cross-validation; a previous run in ``out`` whose config
    matches ``same`` (and chose by cross-validation) lends its choice."""
    if l2_reg is not None:
        return float(l2_reg), None, "given"
    old = _previous_config(out)
    if same is not None and old.get("l2_choice") == "cv" and all(
            old.get(k) == v for k, v in same.items()) and "l2_reg" in old:
        say(f"l2_reg from the previous run in {out}: {old['l2_reg']:.6g}")
        return float(old["l2_reg"]), old.get("cross_validation"), "cv"
    say("choosing l2_reg by 3-fold cross-validation ...")
    l2, cv = choose()
    return float(l2), cv, "cv"


def _previous_config(out):
    try:
        with open(os.path.join(out, "metrics.json")) as fh:
            return json.load(fh).get("config", {})
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _fingerprint(cfg, group_matrix):
    h = hashlib.sha256(json.dumps(json_safe(cfg), sort_keys=True,
                                  default=str).encode())
    for a in (group_matrix.indptr, group_matrix.indices, group_matrix.data):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _retrain_cached(path, fp, model, X, y, C, X_test, y_test, n_jobs,
                    progress, say):
    saved, _ = _load_effects(path, fp, method="retrain")
    if saved is not None and saved.params.shape[0] == C.shape[0]:
        say(f"refits loaded from {path}")
        return saved, 0.0
    t = time.perf_counter()
    act = retrain(model, X, y, C, X_test, y_test, n_jobs=n_jobs,
                  progress=progress)
    _save_effects(path, act, fp)
    return act, time.perf_counter() - t


def _predict(model, X, y, C, X_test, y_test, method):
    """influence(), or NaN everywhere with the reason when Newton's step is
    undefined for some group (H - H_U not positive definite)."""
    try:
        return influence(model, X, y, C, X_test, y_test, method=method), None
    except SingularHessianError as exc:
        if method != "newton":
            raise
        reason = str(exc)
    eff = influence(model, X, y, C, X_test, y_test)
    eff.params = np.full_like(eff.params, np.nan)
    eff.self_loss = np.full_like(eff.self_loss, np.nan)
    if eff.test_loss is not None:
        eff.test_loss = np.full_like(eff.test_loss, np.nan)
    return eff, reason


def _predict_tiers(model, X, y, C, X_test, y_test, say):
    """Every tier's effects, and the reason for each tier that is undefined."""
    effects, undefined = {}, {}
    for tier in TIERS:
        effects[tier], reason = _predict(model, X, y, C, X_test, y_test, tier)
        if reason:
            undefined[tier] = reason
            say(f"{tier}: undefined ({reason})")
    return effects, undefined


def _num(x):
    return "" if x is None or not np.isfinite(x) else repr(float(x))


def _agree(pred, act):
    # NaN marks a group without a usable number (an uncertified refit, a
    # Newton step that is undefined): left out and counted.
    ok = np.isfinite(pred) & np.isfinite(act)
    out = metrics.agreement(pred[ok], act[ok])
    out["excluded"] = int(np.sum(~ok))
    return out


def _plots():
    try:
        from . import plots
    except ImportError:
        return None
    return plots


# ---------------------------------------------------------------------------
# Case 1: a feature dependence traced back to training data
# ---------------------------------------------------------------------------


def run_dependence(dataset, out, *, feature, kind="permutation", metric="loss",
                   l2_reg=None, seed=0, per_type=20, max_features=None,
                   n_repeats=1, n_jobs=None, progress=None, say=print):
    """Run the dependence case study on one data set; returns the metrics."""
    t_start = time.perf_counter()
    times = {}
    os.makedirs(out, exist_ok=True)
    data = _load(dataset, max_features, say)
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    # Check the feature before any work.
    resolve_feature(feature, X.shape[1], data.feature_names)
    say(f"{data.name}: {n} training rows, {X.shape[1]} features, "
        f"{data.X_test.shape[0]} test rows")

    # 1. Fit and the dependence.
    t = time.perf_counter()
    same = {"case": "dependence", "dataset": dataset, "seed": seed,
            "max_features": max_features, "n_train": n}
    l2_reg, cv, choice = _choose_l2(
        l2_reg, lambda: cross_validate_l2(X, y, seed=seed), say, out, same)
    model = fit(X, y, l2_reg)
    dep = dependence(model, data.X_test, data.y_test, feature, kind=kind,
                     metric=metric, seed=seed, n_repeats=n_repeats,
                     feature_names=data.feature_names)
    times["fit"] = time.perf_counter() - t
    col_names = [data.feature_names[j] for j in dep.columns]
    say(f"l2_reg = {l2_reg:.6g} (l2_reg/n = {l2_reg / n:.1e}, {choice}); "
        f"dependence on {dep.feature} ({len(col_names)} column(s), {kind}, "
        f"{metric}): D = {dep.value:.6g}")

    # 2. Every training point's first-order effect on D.
    t = time.perf_counter()
    pe = point_effects(model, X, y, dep.gradient)
    times["point_effects"] = time.perf_counter() - t

    # 3. Groups, then the unions of the top 2..5 attribute groups by
    # first-order prediction (while they hold at most half the data).
    gset = _dependence_groups(model, data, pe, per_type, seed)
    attr = gset.select("attribute")
    if len(attr):
        C_attr = G.as_matrix(attr.groups, n)
        first = influence(model, X, y, C_attr).params @ dep.gradient
        order = np.argsort(first, kind="stable")[:5]
        unions, names = [], []
        for m in range(2, order.size + 1):
            union = np.unique(np.concatenate([attr.groups[g] for g in order[:m]]))
            if union.size > n // 2:  # no longer a "group" of the data
                break
            unions.append(union)
            names.append("top-" + str(m) + ": " + " | ".join(
                attr.names[g] for g in order[:m]))
        gset = gset + G.GroupSet.of("top-attributes", unions, names)
    groups, names, kinds, dropped = _drop_invalid(gset.groups, gset.names,
                                                  gset.kinds, model, data)
    C = G.as_matrix(groups, n)
    kinds_a = np.asarray(kinds)
    counts = ", ".join(f"{k} {int(np.sum(kinds_a == k))}"
                       for k in dict.fromkeys(kinds))
    say(f"{len(groups)} groups ({counts}); {dropped} left out for removing a "
        f"whole class")

    # 4. Predicted changes of D: each tier linearised and plugged in.
    t = time.perf_counter()
    pred = {}
    effects, undefined = _predict_tiers(model, X, y, C, None, None, say)
    for tier, eff in effects.items():
        step = np.nan_to_num(eff.params)
        pred[tier] = dep.change(step, linear=True)
        pred[tier + "+plugin"] = dep.change(step)
        if tier in undefined:
            pred[tier][:] = pred[tier + "+plugin"][:] = np.nan
    times["predict"] = time.perf_counter() - t

    # 5. Actual changes of D by refitting without each group.
    cfg = {"case": "dependence", "dataset": dataset, "data_name": data.name,
           "n_train": n, "n_features": int(X.shape[1]), "n_test":
           int(data.X_test.shape[0]), "l2_reg": l2_reg, "l2_over_n": l2_reg / n,
           "l2_choice": choice, "cross_validation": cv, "seed": seed,
           "per_type": per_type, "max_features": max_features,
           "feature": str(feature), "columns": col_names, "kind": kind,
           "metric": metric, "n_repeats": n_repeats}
    fp = _fingerprint(cfg, C)
    act_eff, times["retrain"] = _retrain_cached(
        os.path.join(out, "actual.npz"), fp, model, X, y, C, None, None,
        n_jobs, progress, say)
    actual = dep.change(act_eff.params)

    # 6. Tables, metrics, figure. A refit that missed its target is listed
    # in the table but enters no statistic.
    stat = np.where(act_eff.converged, actual, np.nan)
    agreement = {}
    for key, p in pred.items():
        agreement[key] = {"all": _agree(p, stat)}
        for k in dict.fromkeys(kinds):
            sel = kinds_a == k
            agreement[key][k] = _agree(p[sel], stat[sel])
    order = np.lexsort((np.arange(len(groups)), pred["first-order"]))
    # The feature's coefficients before and after each refit show whether
    # a removal shrinks the dependence or flips its direction.
    K, d = dep.n_logits, dep.n_features
    coef_idx = [k * d + j for k in range(K) for j in dep.columns]
    coef_names = [(f"coef[{c}]" if K == 1 else f"coef[{k}][{c}]")
                  for k in range(K) for c in col_names]
    coef_after = dep.params[coef_idx][None, :] + act_eff.params[:, coef_idx]
    _write_dependence_groups(os.path.join(out, "groups.csv"), order, names,
                             kinds, C, pred, actual, act_eff, dep.value,
                             coef_names, coef_after)
    top_points = _write_points(os.path.join(out, "points.csv"), pe, data,
                               feature)
    np.savez(os.path.join(out, "point_effects.npz"), point_effects=pe)
    composition = _composition(data, groups, names, kinds, feature)
    result = {
        "config": cfg,
        "dependence": {"feature": dep.feature, "columns": col_names,
                       "kind": kind, "metric": metric, "value": dep.value,
                       "coef_at_fit": dict(zip(coef_names,
                                               dep.params[coef_idx]))},
        "agreement": agreement, "tiers_undefined": undefined,
        "top_points": top_points, "responsible_composition": composition,
        "refits_converged": bool(np.all(act_eff.converged)),
        "refit_max_grad_norm": float(np.max(act_eff.grad_norm)),
        "timings_s": times,
    }
    times["total"] = time.perf_counter() - t_start
    write_json(os.path.join(out, "metrics.json"), result)
    summary = _dependence_summary(result, order, names, kinds, C, pred, actual,
                                  dep, n)
    with open(os.path.join(out, "summary.txt"), "w") as fh:
        fh.write(summary + "\n")
    say("")
    say(summary)
    plots = _plots()
    if plots is not None:
        _dependence_figure(plots, os.path.join(out, "dependence.png"), data.name,
                           dep, names, kinds, pred, actual, C)
        say("figure: dependence.png")
    return result


def _dependence_groups(model, data, pe, per_type, seed):
    n = pe.size
    sets = []
    if data.groups_train:
        g, nm = G.attribute_groups(data.groups_train,
                                   min_size=max(1, int(0.0025 * n)))
        sets.append(G.GroupSet.of("attribute", g, nm))

    # The k points whose removal lowers D most ("responsible") or raises it.
    sizes = np.unique(G.size_grid(n, max(2, per_type // 4), 0.0005, 0.05))
    order = np.argsort(pe, kind="stable")
    sets.append(G.GroupSet.of("responsible", [np.sort(order[:k]) for k in sizes],
                              [f"most responsible k={k}" for k in sizes]))
    sets.append(G.GroupSet.of("opposing", [np.sort(order[n - k:]) for k in sizes],
                              [f"most opposing k={k}" for k in sizes]))
    top = order[: min(10, n)]
    sets.append(G.GroupSet.of("point", [np.array([i]) for i in top],
                              [f"point {i}" for i in top]))
    rsizes = np.unique(G.size_grid(n, max(2, per_type // 4)))
    sets.append(G.GroupSet.of("random", G.random_groups(n, rsizes, seed),
                              [f"random k={k}" for k in rsizes]))
    return G.GroupSet.concat(sets)


def _write_dependence_groups(path, order, names, kinds, C, pred, actual,
                             act_eff, value, coef_names, coef_after):
    sizes = np.diff(C.indptr)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "type", "name", "n_removed"]
                   + [f"pred_{k}" for k in pred]
                   + ["actual", "dependence_after"]
                   + [f"{c}_after" for c in coef_names]
                   + ["refit_grad_norm", "refit_converged"])
        for r, g in enumerate(order):
            w.writerow([r + 1, kinds[g], names[g], int(sizes[g])]
                       + [_num(pred[k][g]) for k in pred]
                       + [_num(actual[g]), _num(value + actual[g])]
                       + [_num(c) for c in coef_after[g]]
                       + [_num(act_eff.grad_norm[g]),
                          bool(act_eff.converged[g])])


def _own_attribute(data, feature):
    # The attribute column a one-hot feature comes from, if there is one.
    key = str(feature).replace("-", "_")
    return key if key in data.groups_train else None


def _write_points(path, pe, data, feature, k=50):
    """The k most responsible and k most opposing points, with attributes
    (the feature's own attribute first)."""
    order = np.argsort(pe, kind="stable")
    rows = [("responsible", i) for i in order[:k]]
    rows += [("opposing", i) for i in order[::-1][:k]]
    own = _own_attribute(data, feature)
    cols = ([own] if own else []) + [c for c in data.groups_train if c != own]
    names = data.target_names
    out = []
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["side", "rank", "index", "first_order_effect", "label"]
                   + cols)
        rank = {"responsible": 0, "opposing": 0}
        for side, i in rows:
            rank[side] += 1
            label = names[data.y_train[i]] if names else int(data.y_train[i])
            attrs = [str(data.groups_train[c][i]) for c in cols]
            w.writerow([side, rank[side], int(i), _num(pe[i]), label] + attrs)
            if side == "responsible" and rank[side] <= 10:
                out.append({"index": int(i), "effect": float(pe[i]),
                            "label": str(label), **dict(zip(cols, attrs))})
    return out


def _composition(data, groups, names, kinds, feature, top=5):
    """Who the most responsible points are: label and attribute shares in
    the largest responsible group of at most 2 % of the data (or the
    smallest one), against the whole training set."""
    n = data.y_train.size
    resp = [g for g, k in enumerate(kinds) if k == "responsible"]
    if not resp:
        return None
    small = [g for g in resp if groups[g].size <= 0.02 * n]
    g = (max(small, key=lambda g: groups[g].size) if small
         else min(resp, key=lambda g: groups[g].size))
    idx = groups[g]
    labels = data.target_names or [str(k) for k in range(data.n_classes)]
    shares = np.bincount(data.y_train[idx], minlength=len(labels)) / idx.size
    base = np.bincount(data.y_train, minlength=len(labels)) / n
    out = {"group": names[g], "size": int(idx.size),
           "labels": [{"value": f"label={lab}", "share": float(s),
                       "share_overall": float(b)}
                      for lab, s, b in zip(labels, shares, base)],
           "own_attribute": [], "values": []}
    own = _own_attribute(data, feature)
    rows = []
    for col, values in data.groups_train.items():
        values = np.asarray(values)
        uniq, counts = np.unique(values, return_counts=True)
        inside = np.array([np.sum(values[idx] == u) for u in uniq]) / idx.size
        for u, s, b in zip(uniq, inside, counts / n):
            row = {"value": f"{col}={u}", "share": float(s),
                   "share_overall": float(b), "lift": float(s / b)}
            if col == own:
                out["own_attribute"].append(row)
            elif s >= 0.05:
                rows.append(row)
    rows.sort(key=lambda r: -r["lift"])
    out["values"] = rows[:top]
    return out


def _dependence_summary(result, order, names, kinds, C, pred, actual, dep, n,
                        n_rows=12):
    cfg = result["config"]
    sizes = np.diff(C.indptr)
    lines = [
        f"{cfg['data_name']}: dependence on {dep.feature} "
        f"({', '.join(result['dependence']['columns'])}), {dep.kind}, "
        f"{dep.metric}: D = {dep.value:.5g}",
        "coefficients at the fit: " + ", ".join(
            f"{k} {v:+.4g}" for k, v in
            result["dependence"]["coef_at_fit"].items())[:160],
        f"n = {n}, l2_reg = {cfg['l2_reg']:.4g} ({cfg['l2_choice']}), "
        f"{len(names)} groups; all refits certified: "
        f"{result['refits_converged']} (max ||grad|| "
        f"{result['refit_max_grad_norm']:.1e})",
        "",
        f"Groups ranked by predicted change of D (first-order); the "
        f"{n_rows} most responsible:",
    ]
    head = (f"{'rank':>4}  {'group':<44}{'size':>7}{'1st':>11}{'newton':>11}"
            f"{'actual':>11}{'D after':>10}")
    lines += [head, "-" * len(head)]
    for r, g in enumerate(order[:n_rows]):
        nm = names[g] if len(names[g]) <= 43 else names[g][:40] + "..."
        lines.append(f"{r + 1:>4}  {nm:<44}{sizes[g]:>7}"
                     f"{pred['first-order'][g]:>11.4g}{pred['newton'][g]:>11.4g}"
                     f"{actual[g]:>11.4g}{dep.value + actual[g]:>10.4g}")
    lines += ["", "Spearman rho (slope), predicted vs actual change of D"]
    types = ["all"] + list(dict.fromkeys(kinds))
    lines.append(f"{'tier':<16}" + "".join(f"{t:>16}" for t in types))
    for key, row in result["agreement"].items():
        cells = "".join(
            f"{row[t]['spearman']:>9.3f} ({row[t]['slope']:.2f})"
            if row[t]["n"] >= 3 else f"{'-':>16}" for t in types)
        lines.append(f"{key:<16}{cells}")
    comp = result["responsible_composition"]
    if comp:
        lines += ["", f"Who they are: '{comp['group']}' (share there vs in "
                      f"all training data; then the most over-represented "
                      f"attribute values)"]
        lines += [f"  {v['value']:<36}{v['share']:>7.1%} vs "
                  f"{v['share_overall']:>6.1%}"
                  + (f"  (x{v['lift']:.1f})" if "lift" in v else "")
                  for v in comp["labels"] + comp["own_attribute"]
                  + comp["values"]]
    pts = result["top_points"][:5]
    if pts:
        lines += ["", "Most responsible training points (first-order effect "
                      "of removing each):"]
        for p in pts:
            extra = ", ".join(f"{k}={v}" for k, v in p.items()
                              if k not in ("index", "effect", "label"))[:90]
            lines.append(f"  #{p['index']:<6} {p['effect']:+.3e}  "
                         f"label {p['label']}  {extra}")
    return "\n".join(lines)


def _dependence_figure(plots, path, title, dep, names, kinds, pred, actual, C):
    plt = plots.plt
    kinds = np.asarray(kinds)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = plots._kind_colours(kinds)
    p = pred["first-order"]
    for k, c in colours.items():
        sel = kinds == k
        ax.scatter(actual[sel], p[sel], s=14, color=c, label=k, alpha=0.85)
    lim = float(np.nanmax(np.abs(np.concatenate([p, actual])))) or 1.0
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.7)
    thresh = max(lim * 1e-3, 1e-12)
    ax.set_xscale("symlog", linthresh=thresh)
    ax.set_yscale("symlog", linthresh=thresh)
    rho = _agree(p, actual)["spearman"]
    ax.set_title(f"change of D per group: first-order vs actual, rho={rho:.2f}",
                 fontsize=9)
    ax.set_xlabel("actual change of D (refit)", fontsize=8)
    ax.set_ylabel("predicted change of D", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")

    # D after removing the k most responsible / opposing points.
    sizes = np.diff(C.indptr)
    for k, style in (("responsible", "o"), ("opposing", "s")):
        sel = np.flatnonzero(kinds == k)
        sel = sel[np.argsort(sizes[sel])]
        if sel.size:
            bx.plot(sizes[sel], dep.value + actual[sel], "-" + style,
                    color=colours[k], label=f"{k}: actual", ms=4)
            bx.plot(sizes[sel], dep.value + p[sel], "--" + style,
                    color=colours[k], mfc="none", label=f"{k}: first-order",
                    ms=4)
            bx.plot(sizes[sel], dep.value + pred["newton+plugin"][sel],
                    ":" + style, color=colours[k], mfc="none", ms=3,
                    label=f"{k}: newton+plugin")
    rnd = np.flatnonzero(kinds == "random")
    if rnd.size:
        bx.plot(sizes[rnd], dep.value + actual[rnd], "x", color="grey",
                label="random: actual")
    bx.axhline(dep.value, color="k", lw=0.7)
    bx.set_xscale("log")
    bx.set_xlabel("points removed", fontsize=8)
    bx.set_ylabel("D after removal", fontsize=8)
    bx.set_title("removing the points most responsible for / opposed to D",
                 fontsize=9)
    bx.legend(fontsize=7)
    fig.suptitle(f"{title}: dependence on {dep.feature} ({dep.kind}, "
                 f"{dep.metric}), D = {dep.value:.4g}", fontsize=10)
    plots._save(fig, path, rect=(0, 0, 1, 0.94))


# ---------------------------------------------------------------------------
# Case 2: credit assignment to data sources
# ---------------------------------------------------------------------------


def run_sources(dataset, out, *, source_column=None, l2_reg=None, seed=0,
                max_features=None, max_sources=50, n_jobs=None, progress=None,
                say=print):
    """Run the sources case study on one data set; returns the metrics."""
    t_start = time.perf_counter()
    times = {}
    os.makedirs(out, exist_ok=True)
    data = _load(dataset, max_features, say)
    if source_column is None:
        if data.texts_train is None:
            raise ValueError(
                f"labeling functions need message texts, which dataset "
                f"{data.name!r} does not have (use --dataset spam), or give "
                f"--source-column, one of {list(data.groups_train)}")
        setup = _labeling_setup(data, l2_reg, seed, say, times,
                                (out, {"dataset": dataset,
                                       "max_features": max_features}))
    else:
        if source_column not in data.groups_train:
            raise ValueError(
                f"--source-column {source_column!r} is not a column of "
                f"dataset {data.name!r}; columns: {list(data.groups_train)}")
        setup = _column_setup(data, source_column, l2_reg, seed, max_sources,
                              say, times, (out, {"dataset": dataset,
                                                 "max_features": max_features}))
    model, X, y, C, names, table = (setup[k] for k in
                                    ("model", "X", "y", "C", "names", "table"))
    n = X.shape[0]
    class_names = data.target_names or [str(k) for k in range(model.n_classes)]
    Xt, yt = data.X_test, data.y_test

    # 1. Predicted and actual effects of removing each source.
    t = time.perf_counter()
    effects, undefined = _predict_tiers(model, X, y, C, Xt, yt, say)
    pred = {tier: S.effect_quantities(eff, yt, class_names)
            for tier, eff in effects.items()}
    times["predict"] = time.perf_counter() - t
    cfg = {"case": "sources", "dataset": dataset, "data_name": data.name,
           "mode": setup["mode"], "source_column": source_column,
           "n_rows": n, "n_features": int(X.shape[1]), "n_test": int(Xt.shape[0]),
           "l2_reg": setup["l2_reg"], "l2_choice": setup["l2_choice"],
           "cross_validation": setup["cv"], "seed": seed,
           "max_features": max_features, "max_sources": max_sources,
           "n_sources": len(names), "sources_left_out": setup["left_out"]}
    fp = _fingerprint(cfg, C)
    act_eff, times["retrain"] = _retrain_cached(
        os.path.join(out, "actual.npz"), fp, model, X, y, C, Xt, yt, n_jobs,
        progress, say)
    actual = S.effect_quantities(act_eff, yt, class_names)

    # 2. Agreement across sources, tables, figures.
    stat = {q: np.where(act_eff.converged, v, np.nan) for q, v in actual.items()}
    agreement = {tier: {q: _agree(pred[tier][q], stat[q]) for q in actual}
                 for tier in TIERS}
    result = {"config": cfg, "context": setup["context"], "agreement": agreement,
              "tiers_undefined": undefined,
              "refits_converged": bool(np.all(act_eff.converged)),
              "refit_max_grad_norm": float(np.max(act_eff.grad_norm)),
              "sources": [], "timings_s": times}
    for g, name in enumerate(names):
        row = {"source": name, **{k: v[g] for k, v in table.items()},
               "n_rows": int(C.indptr[g + 1] - C.indptr[g]),
               "removed_weight": float(act_eff.group_weight[g])}
        for q in actual:
            row[f"actual:{q}"] = float(actual[q][g])
            for tier in TIERS:
                row[f"{tier}:{q}"] = float(pred[tier][q][g])
        row["refit_converged"] = bool(act_eff.converged[g])
        result["sources"].append(row)
    result["sources"].sort(key=lambda r: -r["actual:test_loss"])
    _write_sources_csv(os.path.join(out, "sources.csv"), result["sources"])
    times["total"] = time.perf_counter() - t_start
    write_json(os.path.join(out, "metrics.json"), result)
    summary = _sources_summary(result, list(actual), setup)
    with open(os.path.join(out, "summary.txt"), "w") as fh:
        fh.write(summary + "\n")
    say("")
    say(summary)
    plots = _plots()
    if plots is not None:
        figs = _sources_figures(plots, out, data.name, setup, names, pred,
                                actual)
        say("figures: " + ", ".join(figs))
    return result


def _labeling_setup(data, l2_reg, seed, say, times, reuse):
    t = time.perf_counter()
    lfs = S.SPAM_LABELING_FUNCTIONS
    votes = S.apply_labeling_functions(lfs, S.mails_from_dataset(data, "train"))
    coverage, precision, n_fired = S.coverage_precision(votes, data.y_train)
    rows = S.weak_supervision_rows(votes)
    times["labeling_functions"] = time.perf_counter() - t
    X = data.X_train[rows.message]
    y, w = rows.label, rows.weight
    covered = np.unique(rows.message).size
    say(f"{len(lfs)} labeling functions vote {int(n_fired.sum())} times on "
        f"{covered} of {votes.shape[0]} training messages: {y.size} distinct "
        f"(message, vote) rows")

    t = time.perf_counter()
    same = {**reuse[1], "case": "sources", "mode": "labeling-functions",
            "seed": seed, "n_rows": int(y.size)}
    l2, cv, choice = _choose_l2(l2_reg, lambda: S.cross_validate_l2_grouped(
        X, y, w, rows.message, seed=seed), say, reuse[0], same)
    model = fit(X, y, l2, w)
    times["fit"] = time.perf_counter() - t

    # Sources that never fire, or whose removal leaves a class without
    # weight, have no refit; they are listed as left out.
    onehot = np.eye(model.n_classes)[np.searchsorted(model.classes_, y)]
    left = (w @ onehot)[None, :] - rows.sources @ (w[:, None] * onehot)
    kept = [j for j in range(len(lfs))
            if n_fired[j] > 0 and np.all(left[j] > 1e-12 * w.sum())]
    left_out = [lfs[j].name for j in range(len(lfs)) if j not in kept]
    C = sp.csr_matrix(rows.sources[kept])

    # Context: the weak model, majority vote and a gold-trained model.
    acc = float(np.mean(model.predict(data.X_test) == data.y_test))
    mv = _majority_vote(votes)
    decided = mv != S.ABSTAIN
    gold = fit(data.X_train, data.y_train, l2 / w.sum() * data.X_train.shape[0])
    context = {
        "labeling_functions": [{"name": lf.name, "vote": lf.vote,
                                "description": lf.description} for lf in lfs],
        "votes": int(n_fired.sum()), "rows": int(y.size),
        "messages_covered": int(covered),
        "messages": int(votes.shape[0]),
        "weak_model_test_accuracy": acc,
        "majority_vote_train_accuracy": float(np.mean(
            mv[decided] == data.y_train[decided])),
        "majority_vote_decided_share": float(decided.mean()),
        "gold_model_test_accuracy": float(np.mean(
            gold.predict(data.X_test) == data.y_test)),
    }
    say(f"l2_reg = {l2:.4g} ({choice}); weak-label model test accuracy "
        f"{acc:.3f} (the same model on gold labels: "
        f"{context['gold_model_test_accuracy']:.3f})")
    vote_names = data.target_names or ("0", "1")
    table = {"vote": [vote_names[lfs[j].vote] for j in kept],
             "coverage": coverage[kept], "precision": precision[kept]}
    return {"mode": "labeling-functions", "model": model, "X": X, "y": y,
            "C": C, "names": [lfs[j].name for j in kept], "table": table,
            "l2_reg": l2, "l2_choice": choice, "cv": cv, "left_out": left_out,
            "context": context, "x_second": "precision"}


def _majority_vote(votes):
    # Most frequent vote per message; ties and no votes abstain.
    spam = np.sum(votes == S.SPAM, axis=1)
    ham = np.sum(votes == S.HAM, axis=1)
    return np.where(spam > ham, S.SPAM, np.where(ham > spam, S.HAM, S.ABSTAIN))


def _column_setup(data, column, l2_reg, seed, max_sources, say, times, reuse):
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    t = time.perf_counter()
    same = {**reuse[1], "case": "sources", "mode": "column", "seed": seed,
            "n_rows": n}
    l2, cv, choice = _choose_l2(
        l2_reg, lambda: cross_validate_l2(X, y, seed=seed), say, reuse[0], same)
    model = fit(X, y, l2)
    times["fit"] = time.perf_counter() - t
    groups, names, n_small = S.column_sources(
        data.groups_train[column], min_size=max(1, int(0.0025 * n)),
        max_sources=max_sources)
    groups, names, _, dropped = _drop_invalid(groups, names, ["source"] *
                                              len(groups), model, data)
    kept = set(names)
    all_values = np.unique(np.asarray(data.groups_train[column]).astype(str))
    left_out = [v for v in all_values.tolist() if v not in kept]
    if len(groups) < 1:
        raise ValueError(f"--source-column {column!r} gives no usable source "
                         f"(each value is too small or holds a whole class)")
    C = G.as_matrix(groups, n)
    pred_train = model.predict(X)
    # The labels are gold here, so a source has no precision; its label
    # balance and how often the full model agrees with its labels stand in.
    if model.n_classes == 2:
        balance = ("positive_rate", [np.mean(y[g] == model.classes_[1])
                                     for g in groups])
    else:
        balance = ("majority_class_share", [np.bincount(y[g]).max() / g.size
                                            for g in groups])
    table = {"coverage": np.array([g.size / n for g in groups]),
             balance[0]: np.array(balance[1]),
             "model_agreement": np.array([np.mean(pred_train[g] == y[g])
                                          for g in groups])}
    say(f"l2_reg = {l2:.4g} ({choice}); {len(groups)} sources by {column} "
        f"({n_small} values below {max(1, int(0.0025 * n))} rows or beyond "
        f"the {max_sources} largest, {dropped} holding a whole class: left out)")
    context = {"column": column, "test_accuracy": float(np.mean(
        model.predict(data.X_test) == data.y_test))}
    return {"mode": "column", "model": model, "X": X, "y": y, "C": C,
            "names": names, "table": table, "l2_reg": l2, "l2_choice": choice,
            "cv": cv, "left_out": left_out, "context": context,
            "x_second": "model_agreement"}


def _write_sources_csv(path, rows):
    header = list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([_num(v) if isinstance(v, (float, np.floating)) else v
                        for v in (r[k] for k in header)])


def _sources_summary(result, quantities, setup):
    cfg, ctx = result["config"], result["context"]
    lines = []
    if setup["mode"] == "labeling-functions":
        lines.append(
            f"{cfg['data_name']}: {len(result['sources'])} labeling functions, "
            f"{ctx['votes']} votes ({ctx['rows']} distinct (message, vote) "
            f"rows) on {ctx['messages_covered']} "
            f"of {ctx['messages']} training messages; test accuracy against "
            f"gold: weak-label model {ctx['weak_model_test_accuracy']:.3f}, "
            f"gold-label model {ctx['gold_model_test_accuracy']:.3f}")
        first = ("vote", "coverage", "precision")
    else:
        lines.append(f"{cfg['data_name']}: {len(result['sources'])} sources by "
                     f"{cfg['source_column']}, test accuracy "
                     f"{ctx['test_accuracy']:.3f}")
        first = tuple(setup["table"])
    lines.append(f"l2_reg = {cfg['l2_reg']:.4g} ({cfg['l2_choice']}); all "
                 f"refits certified: {result['refits_converged']}; left out: "
                 f"{setup['left_out'] or 'none'}")
    lines += ["", "Change when the source is removed, first-order and actual "
                  "(test: mean test loss, then per class, x 1e3; self: the "
                  "source's summed training loss), sorted by the actual change "
                  "of the test loss"]
    short = {"test_loss": "test"}
    for q in quantities:
        if q.startswith("test_loss["):
            short[q] = q[len("test_loss["):-1][:8]
    short["self_loss"] = "self"
    head = f"{'source':<20}" + "".join(f"{c[:9]:>10}" for c in first)
    for q in quantities:
        head += f"{short[q] + ' 1st':>14}{short[q] + ' act':>14}"
    lines += [head, "-" * len(head)]
    for r in result["sources"]:
        line = f"{str(r['source'])[:19]:<20}"
        for c in first:
            v = r[c]
            line += f"{v:>10}" if isinstance(v, str) else f"{v:>10.3f}"
        for q in quantities:
            scale = 1.0 if q == "self_loss" else 1e3
            line += (f"{scale * r['first-order:' + q]:>14.3f}"
                     f"{scale * r['actual:' + q]:>14.3f}")
        lines.append(line)
    lines += ["", "Spearman rho across sources, predicted vs actual (slope)"]
    lines.append(f"{'quantity':<22}" + "".join(f"{t:>20}" for t in TIERS))
    for q in quantities:
        cells = ""
        for t in TIERS:
            a = result["agreement"][t][q]
            cells += (f"{a['spearman']:>12.3f} ({a['slope']:.2f})"
                      if a["n"] >= 3 else f"{'-':>20}")
        lines.append(f"{q:<22}{cells}")
    return "\n".join(lines)


def _sources_figures(plots, out, title, setup, names, pred, actual):
    files = []
    kinds = list(setup["table"].get("vote", ["source"] * len(names)))
    plots.scatter_grid(os.path.join(out, "pred_vs_actual.png"),
                       f"{title}: removing a source, first-order vs retraining",
                       pred["first-order"], actual, kinds)
    files.append("pred_vs_actual.png")
    x2 = setup["x_second"]
    for xname in ("coverage", x2):
        x = np.asarray(setup["table"][xname], dtype=float)
        fname = f"effect_vs_{'agreement' if xname == 'model_agreement' else xname}.png"
        _effect_vs(plots, os.path.join(out, fname), title, xname, x, names,
                   kinds, pred, actual)
        files.append(fname)
    return files


def _effect_vs(plots, path, title, xname, x, names, kinds, pred, actual):
    plt = plots.plt
    qs = list(actual)
    kinds = np.asarray(kinds)
    colours = plots._kind_colours(kinds)
    cols = 2 if len(qs) > 2 else len(qs)
    rows = int(np.ceil(len(qs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows),
                             squeeze=False)
    for ax in axes.ravel()[len(qs):]:
        ax.axis("off")
    for ax, q in zip(axes.ravel(), qs):
        # Mean test losses move by thousandths; a self-loss is a sum.
        scale = 1.0 if q == "self_loss" else 1e3
        for k, c in colours.items():
            sel = kinds == k
            ax.scatter(x[sel], scale * actual[q][sel], s=22, color=c,
                       label=f"actual ({k})")
        ax.scatter(x, scale * pred["first-order"][q], s=30, facecolors="none",
                   edgecolors="k", lw=0.7, label="first-order")
        for xi, yi, nm in zip(x, scale * actual[q], names):
            ax.annotate(str(nm)[:14], (xi, yi), fontsize=5.5,
                        xytext=(2, 2), textcoords="offset points")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel(xname.replace("_", " "), fontsize=8)
        ax.set_ylabel(f"change of {q}" + (" (x 1e3)" if scale != 1 else ""),
                      fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(q, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: effect of removing a source vs its "
                 f"{xname.replace('_', ' ')}", fontsize=10)
    plots._save(fig, path, rect=(0, 0, 1, 0.95))


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


def run_case(args, check_out_dir, say=print):
    """``groupinf experiment --case ...``: check the options, then run."""
    if args.case is None:
        flag = "--feature" if args.feature is not None else "--source-column"
        need = "dependence" if flag == "--feature" else "sources"
        raise ValueError(f"{flag} needs --case {need}")
    if args.case == "dependence" and args.feature is None:
        raise ValueError("--case dependence needs --feature (a column name, an "
                         "attribute such as sex, or a column index)")
    if args.case == "dependence" and args.source_column is not None:
        raise ValueError("--source-column is for --case sources")
    if args.case == "sources" and args.feature is not None:
        raise ValueError("--feature is for --case dependence")
    for flag, attr in (("--sweep-l2", "sweep_l2"),
                       ("--dask-scheduler", "dask_scheduler")):
        if getattr(args, attr, None):
            raise ValueError(f"{flag} is for the accuracy study, not --case")
    name = os.path.basename(args.dataset).split(".")[0] or "data"
    progress = False if args.no_progress else None
    if args.case == "dependence":
        feature = args.feature
        if feature.strip().lstrip("-").isdigit():
            feature = int(feature)
        tag = str(args.feature).replace("/", "_").replace(" ", "_")
        out = args.out or os.path.join("groupinf-study",
                                       f"{name}-dependence-{tag}")
        check_out_dir(out)
        run_dependence(args.dataset, out, feature=feature, l2_reg=args.l2,
                       seed=args.seed, per_type=args.groups,
                       max_features=args.max_features, n_jobs=args.n_jobs,
                       progress=progress, say=say)
    else:
        tag = "labeling-functions" if args.source_column is None else \
            args.source_column
        out = args.out or os.path.join("groupinf-study", f"{name}-sources-{tag}")
        check_out_dir(out)
        run_sources(args.dataset, out, source_column=args.source_column,
                    l2_reg=args.l2, seed=args.seed,
                    max_features=args.max_features, n_jobs=args.n_jobs,
                    progress=progress, say=say)
    say(f"wrote {out}")
    return 0
