"""The group-influence accuracy study: ``groupinf experiment``.

For one data set: choose l2_reg (cross-validation on a grid of l2_reg / n, or
given), fit, pick test points (3 highest-loss and 3 random, seeded), build
every group type, predict each group's effect with every tier (first-order,
one-step Newton, second-order, Basu et al.'s mean-objective second-order, and
plug-in variants), measure it by exact retraining, and report agreement per
quantity, per tier and per group type. Outputs in ``--out``:

- ``config.json``    the run's settings and the chosen l2_reg;
- ``groups.npz``     the groups (CSR arrays) with ``groups.json`` names/types;
- ``pred_<tier>.npz`` and ``actual.npz``  every effect array;
- ``groups.csv``     one row per group, predicted and actual side by side;
- ``metrics.json``   Spearman/Pearson/Kendall/slope/median relative error;
- PNG figures (with matplotlib): predicted vs actual per quantity coloured by
  group type, Newton vs actual, the leverage distribution, and with
  ``--sweep-l2`` Spearman against l2_reg / n.

Re-running with the same settings continues: finished stages are loaded from
their files, and retraining resumes from its last saved chunk. Files are
checked against the config's fingerprint; a mismatch starts afresh.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
import warnings
import zipfile

import numpy as np
import scipy.sparse as sp

from . import counterexamples, datasets, groups as G, metrics
from ._influence import influence, predict_all
from ._model import fit
from ._results import GroupEffects, Progress
from ._retrain import retrain
from .model_selection import cross_validate_l2

TIERS = ("first-order", "newton", "second-order", "basu-second-order")
SWEEP_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


def load_any(name, max_features=None):
    """A data set by name (including counterexamples) or path."""
    if name in counterexamples.NAMES:
        data = counterexamples.load_counterexample(name)
    else:
        data = datasets.load_dataset(name)
    if max_features is not None and data.X_train.shape[1] > max_features:
        data = _top_features(data, max_features)
    return data


def _top_features(data, k):
    # Keep the k columns that are non-zero in most training rows: for bag of
    # words, the most frequent words. Stated in the config, never silent.
    X = data.X_train
    nnz = np.asarray((X != 0).sum(axis=0)).ravel()
    keep = np.sort(np.argsort(-nnz, kind="stable")[:k])
    return dataclasses.replace(
        data, X_train=X[:, keep], X_test=data.X_test[:, keep],
        feature_names=tuple(np.asarray(data.feature_names)[keep]))


# ---------------------------------------------------------------------------
# Test points and groups
# ---------------------------------------------------------------------------


def choose_test_points(model, data, seed, k_top=3, k_random=3):
    """The k_top highest-loss test points, then k_random random others."""
    loss = model.loss(data.X_test, data.y_test)
    top = np.argsort(-loss, kind="stable")[:k_top]
    rest = np.setdiff1d(np.arange(loss.size), top)
    rnd = np.random.default_rng(seed).choice(rest, min(k_random, rest.size),
                                             replace=False)
    return np.concatenate([top, rnd]).astype(np.int64)


def build_groups(model, data, test_idx, *, per_type=20, seed=0):
    """Every group type of the study: returns (groups, names, kinds)."""
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    out_g, out_n, out_k = [], [], []

    def add(kind, pair):
        groups, names = pair
        out_g.extend(groups)
        out_n.extend(names)
        out_k.extend([kind] * len(groups))

    sizes = G.size_grid(n, per_type)
    add("random", (G.random_groups(n, sizes, seed), [f"size {k}" for k in sizes]))
    designed = counterexamples.designed_groups(data, seed=seed)
    if designed[0]:
        # A constructed counterexample: its own groups, random ones beside.
        add("designed", designed)
        return _drop_invalid(out_g, out_n, out_k, model, data)
    add("random-in-class", G.random_within_class(y, sizes, seed))

    # Tails of per-point influence on each test point's loss.
    infl = point_influence(model, data.X_train, y, data.X_test[test_idx],
                           data.y_test[test_idx])
    tail_sizes = G.size_grid(n, max(2, per_type // 5))
    for t in range(infl.shape[1]):
        groups, names = G.influence_tails(infl[:, t], tail_sizes)
        add("influence-tail", (groups, [f"test{t} {s}" for s in names]))

    ks = _cluster_ks(n, per_type)
    add("kmeans", G.feature_clusters(X, ks, seed, method="kmeans"))
    add("hierarchical", G.feature_clusters(X, ks, seed, method="hierarchical"))
    add("gradient-cluster", G.gradient_clusters(
        projected_gradients(model, X, y, seed), ks, seed))

    # Windows along the feature the model leans on most.
    j = int(np.argmax(np.abs(model.coef_).sum(axis=0)))
    col = X[:, j].toarray().ravel() if sp.issparse(X) else X[:, j]
    add("feature-window", G.feature_windows(col, sizes))

    if data.groups_train:
        attr, names = G.attribute_groups(data.groups_train,
                                         min_size=max(1, int(0.0025 * n)))
        add("attribute", (attr, [f"{c}={v}" for c, v in names]))
    return _drop_invalid(out_g, out_n, out_k, model, data)


def _cluster_ks(n, per_type):
    ks = [k for k in (2, 5, 10, 20) if k < n]
    return ks[: max(1, min(len(ks), per_type // 5))]


def _drop_invalid(groups, names, kinds, model, data):
    # Groups that would empty a class (possible for clusters and attribute
    # values) have no refit; the study leaves them out and says how many.
    y_codes = np.searchsorted(model.classes_, data.y_train)
    keep = []
    for g, idx in enumerate(groups):
        idx = np.asarray(idx)
        if idx.size == 0:
            continue
        left = np.bincount(np.delete(y_codes, idx), minlength=model.n_classes)
        if np.all(left > 0):
            keep.append(g)
    dropped = len(groups) - len(keep)
    return ([np.asarray(groups[g], dtype=np.int64) for g in keep],
            [names[g] for g in keep], [kinds[g] for g in keep], dropped)


def point_influence(model, X, y, X_test, y_test):
    """First-order effect of removing each training point on each test loss.

    Returns (n_train, n_test): s_i grad l_t^T H^-1 grad l_i.
    """
    from ._newton import solve

    obj = model._objective
    X_test, yt = model._encode(X_test, y_test, "X_test", "y_test")
    _, dl_t, _ = obj.pointwise(model._theta, X_test, yt)
    V = solve(model.hessian_factor_, obj.point_gradients(dl_t, X_test))
    _, dl, _ = obj.pointwise(model._theta)
    dl = dl.reshape(dl.shape[0], -1)
    out = np.empty((X.shape[0], V.shape[0]))
    for t in range(V.shape[0]):
        Z = obj.logits(V[t]).reshape(X.shape[0], -1)
        out[:, t] = model.sample_weight_ * np.sum(dl * Z, axis=1)
    return out


def projected_gradients(model, X, y, seed, dim=32):
    """Per-example loss gradients projected on `dim` random directions."""
    obj = model._objective
    _, dl, _ = obj.pointwise(model._theta)
    dl = dl.reshape(dl.shape[0], -1)
    R = np.random.default_rng(seed).normal(size=(dim, obj.n_params))
    return np.column_stack([
        np.sum(dl * obj.logits(R[c]).reshape(dl.shape[0], -1), axis=1)
        for c in range(dim)
    ])


# ---------------------------------------------------------------------------
# Quantities and agreement
# ---------------------------------------------------------------------------


def quantities(eff):
    """Named (G,) effect vectors of one GroupEffects."""
    q = {"self_loss": eff.self_loss, "param_norm": eff.param_norm}
    if eff.self_margin is not None:
        q["self_margin"] = eff.self_margin
    for name in ("test_loss", "test_margin"):
        arr = getattr(eff, name)
        if arr is not None:
            for t in range(arr.shape[1]):
                q[f"{name}[{t}]"] = arr[:, t]
    return q


def usable(preds, actual):
    """Groups whose numbers may enter a statistic: every refit certified
    (``actual.converged``) and every tier's solve converged. A refit or solve
    that missed its target is reported in the tables, never averaged in."""
    ok = np.ones(actual.n_groups, dtype=bool)
    if actual.converged is not None:
        ok &= actual.converged
    for eff in preds.values():
        if eff.solver_converged is not None:
            ok &= eff.solver_converged
    return ok


def agreement(preds, actual, kinds):
    """metrics[tier][quantity][group type or 'all'] -> dict of statistics.

    Groups that fail :func:`usable` are left out of every statistic; their
    count is ``excluded`` in each entry.
    """
    kinds = np.asarray(kinds)
    ok = usable(preds, actual)
    qa = quantities(actual)
    out = {}
    for tier, eff in preds.items():
        qp = quantities(eff)
        out[tier] = {}
        for name in qa:
            if name not in qp:
                continue
            row = {}
            for kind in ["all"] + list(np.unique(kinds)):
                sel = np.ones(kinds.size, dtype=bool) if kind == "all" \
                    else kinds == kind
                row[kind] = metrics.agreement(qp[name][sel & ok],
                                              qa[name][sel & ok])
                row[kind]["excluded"] = int(np.sum(sel & ~ok))
            out[tier][name] = row
    return out


# ---------------------------------------------------------------------------
# Files (no pickles: npz with allow_pickle=False, JSON, CSV)
# ---------------------------------------------------------------------------


def _fingerprint(cfg):
    keys = ("dataset", "l2_reg", "seed", "per_type", "max_features", "test_points")
    blob = json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_effects(path, eff, fingerprint, done=None):
    arrays = {k: v for k, v in eff.arrays().items()}
    if done is not None:
        arrays["_done"] = np.asarray(done, dtype=bool)
    arrays["_fingerprint"] = np.array(fingerprint)
    arrays["_method"] = np.array(eff.method)
    arrays["_checksum"] = np.array(_checksum(arrays))
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _checksum(arrays):
    # SHA-256 over every array's name, dtype, shape and bytes: a file whose
    # arrays were dropped, retyped or edited no longer matches.
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "_checksum"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_effects(path, fingerprint, method=None):
    """A saved GroupEffects, or None if missing, damaged or from another run.

    Anything unexpected about the file (unreadable, not a zip of .npy arrays,
    a checksum that does not match its arrays, arrays that do not fit
    together) means "damaged": a warning, and the caller recomputes.
    """
    if not os.path.exists(path):
        return None, None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if str(arrays["_fingerprint"]) != fingerprint:
            return None, None
        if str(arrays.get("_checksum")) != _checksum(arrays):
            raise ValueError("its checksum does not match its contents")
        if method is not None and str(arrays["_method"]) != method:
            raise ValueError(f"it holds {str(arrays['_method'])!r} effects, "
                             f"not {method!r}")
        fields = {k: v for k, v in arrays.items() if not k.startswith("_")}
        done = arrays.get("_done")
        if done is not None and (done.dtype != bool or done.ndim != 1):
            raise ValueError("its progress record is malformed")
        eff = _from_arrays(str(arrays["_method"]), fields)
    except Exception as exc:  # any damage at all: recompute, never trust
        warnings.warn(f"ignoring damaged file {path}: {exc}", stacklevel=2)
        return None, None
    return eff, done


def write_json(path, obj):
    """Write strict JSON atomically (NaN and infinities become null)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(json_safe(obj), fh, indent=2, allow_nan=False)
    os.replace(tmp, path)


def json_safe(obj):
    """NumPy values as plain ones; NaN and infinities as None (strict JSON
    readers reject them)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


def run_experiment(dataset, out, *, l2_reg=None, per_type=20, seed=0,
                   n_jobs=None, progress=None, sweep_l2=False, max_features=None,
                   plugin=True, say=print, executor=None):
    """Run (or continue) the study on one data set; returns the metrics.

    ``executor`` (a ``concurrent.futures.Executor`` or a Dask ``Client``)
    runs the refits there; see :func:`groupinf.retrain`.
    """
    t_start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    data = load_any(dataset, max_features)
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    say(f"{data.name}: {n} training rows, {X.shape[1]} features, "
        f"{len(np.unique(y))} classes")

    # 1. Regularisation and fit.
    cfg_path = os.path.join(out, "config.json")
    old = _read_json(cfg_path) or {}
    choice = "given" if l2_reg is not None else "cv"
    cv = None
    if l2_reg is None and dataset in counterexamples.L2_REG:
        l2_reg, choice = counterexamples.L2_REG[dataset], "construction"
        say(f"l2_reg = {l2_reg} as the counterexample is built for")
    if l2_reg is None:
        same = all(old.get(k) == v for k, v in (
            ("dataset", dataset), ("l2_choice", "cv"), ("seed", seed),
            ("max_features", max_features)))
        if same and "l2_reg" in old:
            l2_reg, cv = old["l2_reg"], old.get("cross_validation")
            say(f"l2_reg from the previous run in {out}: {l2_reg:.6g}")
        else:
            say("choosing l2_reg by 3-fold cross-validation ...")
            l2_reg, cv = cross_validate_l2(X, y, seed=seed)
    model = fit(X, y, l2_reg)
    say(f"l2_reg = {l2_reg:.6g} (l2_reg/n = {l2_reg / n:.1e}), fit in "
        f"{model.n_iter_} Newton steps, ||grad|| = {model.grad_norm_:.2e}")

    # 2. Test points and groups.
    if dataset == "counterexample-gaussian":
        cand_groups = G.random_groups(n, G.size_grid(n, 30, 0.02, 0.5), seed)
        adv, _ = counterexamples.adversarial_test_points(
            model, X, y, cand_groups, data.X_test, data.y_test)
        rest = np.setdiff1d(np.arange(data.X_test.shape[0]), adv)
        rnd = np.random.default_rng(seed).choice(rest, 3, replace=False)
        test_idx = np.concatenate([adv, rnd]).astype(np.int64)
    else:
        test_idx = choose_test_points(model, data, seed)
    Xt, yt = data.X_test[test_idx], data.y_test[test_idx]
    groups, names, kinds, dropped = build_groups(model, data, test_idx,
                                                 per_type=per_type, seed=seed)
    cfg = {"dataset": dataset, "data_name": data.name, "n_train": n,
           "n_features": int(X.shape[1]), "l2_reg": float(l2_reg),
           "l2_over_n": float(l2_reg) / n,
           "l2_choice": choice,
           "cross_validation": cv, "seed": seed, "per_type": per_type,
           "max_features": max_features, "test_points": test_idx.tolist(),
           "n_groups": len(groups), "groups_dropped_emptying_a_class": dropped}
    fp = _fingerprint(cfg)
    cfg["fingerprint"] = fp
    write_json(cfg_path, cfg)
    _save_groups(out, groups, names, kinds, n)
    say(f"{len(groups)} groups of {len(set(kinds))} types ({dropped} dropped: "
        f"they would remove a whole class); test points {test_idx.tolist()}")

    # 3. Predictions (cheap: recomputed unless saved by this configuration).
    preds, timings = {}, {}
    keys = [t + p for t in TIERS for p in (("", "+plugin") if plugin else ("",))]
    for key in keys:
        eff, _ = _load_effects(os.path.join(out, f"pred_{key}.npz"), fp,
                               method=key)
        if eff is not None:
            preds[key] = eff
    if len(preds) < len(keys):
        t = time.perf_counter()
        fresh = predict_all(model, X, y, groups, Xt, yt, methods=TIERS,
                            plugins=(False, True) if plugin else (False,))
        timings["predict"] = time.perf_counter() - t
        for key, eff in fresh.items():
            _save_effects(os.path.join(out, f"pred_{key}.npz"), eff, fp)
            preds[key] = eff
            # A plug-in variant shares its tier's step; count that once.
            timings[key] = eff.timings["quantities"] + (
                0.0 if key.endswith("+plugin") else eff.timings["step"])
    say("predictions: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))

    # 4. Actual effects, in chunks saved as they finish.
    t = time.perf_counter()
    actual = _retrain_resumable(model, X, y, groups, Xt, yt, out, fp, n_jobs,
                                progress, executor=executor)
    timings["retrain"] = time.perf_counter() - t

    # 5. Agreement, tables, figures.
    table = agreement(preds, actual, kinds)
    result = {"config": cfg, "timings_s": timings, "agreement": table,
              "refits_converged": bool(np.all(actual.converged)),
              "groups_excluded": int(np.sum(~usable(preds, actual))),
              "refit_max_grad_norm": float(np.max(actual.grad_norm))}
    if sweep_l2:
        result["sweep_l2"] = sweep(data, groups, test_idx, seed=seed, say=say)
    write_json(os.path.join(out, "metrics.json"), result)
    _write_csv(os.path.join(out, "groups.csv"), names, kinds, preds, actual)
    figs = _figures(out, data.name, preds, actual, kinds, result)
    summary = summary_table(table)
    say("")
    say(summary)
    with open(os.path.join(out, "summary.txt"), "w") as fh:
        fh.write(summary + "\n")
    say(f"\nrefits: all converged = {result['refits_converged']}, max ||grad|| "
        f"= {result['refit_max_grad_norm']:.2e}; total "
        f"{time.perf_counter() - t_start:.1f}s")
    if figs:
        say("figures: " + ", ".join(os.path.basename(f) for f in figs))
    return result


def _read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _save_groups(out, groups, names, kinds, n):
    C = G.as_matrix(groups, n)
    np.savez(os.path.join(out, "groups.npz"), indptr=C.indptr,
             indices=C.indices, data=C.data, shape=np.array(C.shape))
    write_json(os.path.join(out, "groups.json"),
                {"names": names, "kinds": kinds})


def _retrain_resumable(model, X, y, groups, Xt, yt, out, fp, n_jobs, progress,
                       chunk=32, executor=None):
    path = os.path.join(out, "actual.npz")
    saved, done = _load_effects(path, fp, method="retrain")
    n_groups = len(groups)
    if saved is None or done is None or saved.params.shape[0] != n_groups:
        saved, done = None, np.zeros(n_groups, dtype=bool)
    todo = np.flatnonzero(~done)
    bar = Progress(n_groups, "retrain", enabled=progress)
    bar.update(int(done.sum()))
    parts = {}
    if saved is not None:
        parts["all"] = saved
    arrays = None if saved is None else saved.arrays()
    if executor is not None:
        chunk *= 4  # saved every 128 groups; the executor splits them
    for lo in range(0, todo.size, chunk):
        ids = todo[lo:lo + chunk]
        kw = {"executor": executor} if executor is not None else {
            "n_jobs": n_jobs}
        eff = retrain(model, X, y, [groups[g] for g in ids], Xt, yt,
                      progress=False, **kw)
        arrays = _merge(arrays, eff.arrays(), ids, n_groups)
        done[ids] = True
        merged = _from_arrays("retrain", arrays)
        _save_effects(path, merged, fp, done)
        bar.update(ids.size)
    return _from_arrays("retrain", arrays)


def _merge(arrays, new, ids, n_groups):
    if arrays is None:
        arrays = {k: np.zeros((n_groups,) + v.shape[1:], dtype=v.dtype)
                  for k, v in new.items()}
    for k, v in new.items():
        arrays[k][ids] = v
    return arrays


def _from_arrays(method, arrays):
    """A GroupEffects from saved arrays; ValueError if they do not fit together."""
    fields = dict(arrays)
    for name in ("test_loss", "test_margin"):
        fields.setdefault(name, None)
    known = {f.name for f in dataclasses.fields(GroupEffects)}
    if not set(fields) <= known or "params" not in fields:
        raise ValueError(f"unexpected arrays {sorted(set(fields) - known)}")
    G = fields["params"].shape[0] if fields["params"].ndim == 2 else -1
    kinds = {"converged": "b", "solver_converged": "b", "n_iter": "i",
             "solver_iterations": "i"}
    for name, arr in fields.items():
        if arr is None:
            continue
        if arr.ndim == 0 or arr.shape[0] != G:
            raise ValueError(f"array {name!r} does not match {G} groups")
        want = kinds.get(name, "f")
        if arr.dtype.kind != want or (want == "f" and arr.dtype != np.float64):
            raise ValueError(f"array {name!r} has dtype {arr.dtype}")
        if want == "f" and not np.all(np.isfinite(arr)
                                      | (name == "leverage_max")):
            raise ValueError(f"array {name!r} has non-finite entries")
    conv, gn, tol = (fields.get(k) for k in ("converged", "grad_norm",
                                             "grad_tol"))
    if conv is not None and (gn is None or tol is None
                             or np.any(conv & ~(gn <= tol))):
        raise ValueError("its refit certificates are inconsistent")
    return GroupEffects(method=method, **fields)


def _write_csv(path, names, kinds, preds, actual):
    qa = quantities(actual)
    header = ["group", "type", "name", "removed_weight"]
    cols = []
    for q in qa:
        header.append(f"actual:{q}")
        cols.append(qa[q])
        for tier, eff in preds.items():
            qp = quantities(eff)
            if q in qp:
                header.append(f"{tier}:{q}")
                cols.append(qp[q])
    lev = preds["newton"].leverage_max if "newton" in preds else None
    header += ["leverage_max", "refit_grad_norm", "refit_converged"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for g in range(len(names)):
            w.writerow([g, kinds[g], names[g], repr(float(actual.group_weight[g]))]
                       + [repr(float(c[g])) for c in cols]
                       + [repr(float(lev[g])) if lev is not None else "",
                          repr(float(actual.grad_norm[g])),
                          bool(actual.converged[g])])


def summary_table(table, kinds=None):
    """Spearman per quantity and tier (pooled), then per group type."""
    tiers = list(table)
    quantities_ = list(table[tiers[0]])
    short = {t: t.replace("basu-second-order", "basu").replace(
        "second-order", "2nd").replace("first-order", "1st") for t in tiers}
    width = max(len(q) for q in quantities_) + 2
    cell = max(12, max(len(v) for v in short.values()) + 2)

    def head(label):
        h = f"{label:<{width}}" + "".join(f"{short[t]:>{cell}}" for t in tiers)
        return [h, "-" * len(h)]

    lines = ["Spearman rho, predicted vs actual, all groups"] + head("quantity")
    for q in quantities_:
        lines.append(f"{q:<{width}}" + "".join(
            f"{table[t].get(q, {}).get('all', {}).get('spearman', np.nan):>{cell}.3f}"
            for t in tiers))
    lines += ["", "slope of first-order on actual (< 1: underestimates)"]
    lines += [f"{q:<{width}}{table['first-order'][q]['all']['slope']:>{cell}.3f}"
              for q in quantities_]
    tests = [q for q in quantities_ if q.startswith("test_loss")]
    worst = min(tests, key=lambda q: np.nan_to_num(
        table["first-order"][q]["all"]["spearman"], nan=2.0)) if tests else None
    for q in ("self_loss", worst):
        if q is None:
            continue
        types = [k for k in table["first-order"][q] if k != "all"]
        what = " (where first-order does worst)" if q == worst else ""
        lines += ["", f"Spearman rho by group type: {q}{what}"] + head("group type")
        for k in types:
            lines.append(f"{k:<{width}}" + "".join(
                f"{table[t].get(q, {}).get(k, {}).get('spearman', np.nan):>{cell}.3f}"
                for t in tiers))
    return "\n".join(lines)


def sweep(data, groups, test_idx, *, grid=SWEEP_GRID, seed=0, say=print):
    """Spearman of first-order and Newton predictions across l2_reg / n."""
    X, y = data.X_train, data.y_train
    Xt, yt = data.X_test[test_idx], data.y_test[test_idx]
    rows = []
    for c in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = fit(X, y, c * X.shape[0])
        act = retrain(m, X, y, groups, Xt, yt, progress=False)
        row = {"l2_over_n": c}
        for tier in ("first-order", "newton"):
            try:
                eff = influence(m, X, y, groups, Xt, yt, method=tier)
            except ValueError as exc:  # Newton undefined for some group
                row[tier] = {"error": str(exc)}
                continue
            qp, qa = quantities(eff), quantities(act)
            row[tier] = {q: metrics.agreement(qp[q], qa[q])["spearman"] for q in qa}
        rows.append(row)
        say(f"sweep l2/n = {c:.0e}: first-order self-loss rho = "
            f"{row['first-order'].get('self_loss', float('nan')):.3f}")
    return rows


def _figures(out, title, preds, actual, kinds, result):
    try:
        from . import plots
    except ImportError:
        return []
    return plots.study_figures(out, title, preds, actual, kinds, result)
