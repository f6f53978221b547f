"""The MLP group-influence study: ``groupinf experiment --model mlp``.

On one data set (by default the 10 % MNIST training subset): train an MLP
(two hidden layers, 128 and 32 tanh units) from scratch to give theta_0,
pick test points (the 3 highest-loss test points first, then 3 random
ones), build coherent groups of seven types (``per_type`` of each: random,
random within one class, influence tails on the highest-loss test point,
k-means and Ward clusters of the pixels, k-means clusters of per-example
gradients, windows along the most-used pixel), predict each group's effect by
damped influence around theta_0 and measure it by SGD retraining from
theta_0 for every seed, under both definitions of design.md section 2:

- plain:      f(SGD(theta_0, data - U, r)) - f(theta_0)
- controlled: f(SGD(theta_0, data - U, r)) - f(SGD(theta_0, data, r))

Agreement is Spearman (and the rest of :func:`groupinf.metrics.agreement`)
of predicted against the seed-averaged actual effect, per quantity (self
loss, each test point's loss, ||d_theta||) and per group type; the spread of
the actual effects across seeds (max minus min) says how much of an actual
effect is the seed's noise. Outputs in ``out``: ``config.json``,
``metrics.json``, ``summary.txt``, ``groups.csv``, ``groups.npz`` /
``groups.json``, ``pred.npz``, ``actual_plain.npz``,
``actual_controlled.npz``, per-group retrain files under ``runs/`` and
figures ``mlp_pred_vs_actual_controlled.png``,
``mlp_pred_vs_actual_plain.png`` and ``mlp_seed_spread.png``. Re-running with
the same settings continues: theta_0, the controls and every finished
group's retrains are loaded (checked against the run's fingerprint).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
import warnings
import zipfile

import numpy as np

from . import groups as G
from . import metrics, mlp
from .study import (
    _save_groups,
    agreement,
    choose_test_points,
    load_any,
    quantities,
    write_json,
)

KINDS = (
    "random",
    "random-in-class",
    "influence-tail",
    "kmeans",
    "hierarchical",
    "gradient-cluster",
    "feature-window",
)


def _hash(obj):
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# theta_0 (cached)
# ---------------------------------------------------------------------------


def _fit_cached(out, data, train, say):
    path = os.path.join(out, "theta0.npz")
    fp = _hash(train)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["_fingerprint"]) == fp:
                    info = json.loads(str(f["info"]))
                    model = mlp.MLPModel(
                        tuple(f["sizes"]),
                        str(f["activation"]),
                        float(f["l2_reg"]),
                        f["classes"],
                        f["params"],
                        info,
                    )
                    say(f"theta_0 from {path}")
                    return model
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring damaged file {path}: {exc}", stacklevel=2)
    say(f"training the MLP {train['hidden']} from scratch ...")
    model = mlp.fit(
        data.X_train,
        data.y_train,
        hidden=train["hidden"],
        l2_reg=train["l2_reg"],
        activation=train["activation"],
        epochs=train["epochs"],
        lr=train["lr"],
        batch_size=train["batch_size"],
        polish_iter=train["polish_iter"],
        seed=train["seed"],
    )
    tmp = path + ".tmp.npz"
    np.savez(
        tmp,
        params=model.params_,
        sizes=np.array(model.sizes),
        activation=np.array(model.activation),
        l2_reg=np.array(model.l2_reg),
        classes=model.classes_,
        info=np.array(json.dumps(model.train_info_)),
        _fingerprint=np.array(fp),
    )
    os.replace(tmp, path)
    return model


# ---------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------


def _split_ks(per_type):
    # Two partitions whose cluster counts add up to per_type (4 + 6 = 10).
    if per_type <= 3:
        return [max(2, per_type)]
    a = per_type // 2 - 1
    return [a, per_type - a]


def build_groups(model, data, curv, test_idx, test_dirs, *, per_type, seed):
    """The seven group types, ``per_type`` each (fewer where a clustering
    gives fewer non-empty clusters); returns (groups, names, kinds)."""
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    out_g, out_n, out_k = [], [], []

    def add(kind, pair):
        groups, names = pair
        out_g.extend(np.asarray(g, dtype=np.int64) for g in groups[:per_type])
        out_n.extend(names[:per_type])
        out_k.extend([kind] * min(per_type, len(groups)))

    sizes = G.size_grid(n, per_type)
    half = G.size_grid(n, (per_type + 1) // 2)
    add("random", (G.random_groups(n, sizes, seed), [f"k={k}" for k in sizes]))
    add("random-in-class", G.random_within_class(y, sizes, seed))

    # Tails of each training point's predicted effect on the highest-loss
    # test point's loss: grad l_i^T (C + damping I)^-1 grad l_t.
    infl = curv.loss_jvp(test_dirs[:1])[:, 0]
    groups, names = G.influence_tails(infl, half)
    order = [
        j
        for pair in zip(range(len(half)), range(len(half), 2 * len(half)))
        for j in pair
    ]
    add(
        "influence-tail",
        ([groups[j] for j in order], [f"test0 {names[j]}" for j in order]),
    )

    ks = _split_ks(per_type)
    add("kmeans", G.feature_clusters(X, ks, seed, method="kmeans"))
    add("hierarchical", G.feature_clusters(X, ks, seed, method="hierarchical"))

    # Per-example gradients projected on 64 random directions, by one
    # batched forward-mode pass (never the (n, p) gradient matrix), scaled
    # to unit length: at a theta_0 that fits its training set almost every
    # gradient is near zero, and k-means of the raw vectors puts nearly all
    # points in one cluster; their directions say which way a point pulls.
    R = np.random.default_rng(seed).standard_normal((64, model.n_params))
    Z = curv.loss_jvp(R)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
    add("gradient-cluster", G.gradient_clusters(Z, ks, seed))

    # Windows along the pixel the first layer leans on most (row norm of W_1
    # times the pixel's spread, so constant pixels never win).
    W1 = model.views()[0][0]
    j = int(np.argmax(np.linalg.norm(W1, axis=1) * X.std(axis=0)))
    add(
        "feature-window",
        G.feature_windows(X[:, j], half, n_offsets=2, name=f"pixel{j}"),
    )
    return out_g, out_n, out_k


# ---------------------------------------------------------------------------
# Retraining, resumable
# ---------------------------------------------------------------------------


_RUN_KEYS = (
    "self_plain",
    "self_ctrl",
    "pnorm_plain",
    "pnorm_ctrl",
    "steps",
    "test_plain",
    "test_ctrl",
    "dtheta_plain",
    "dtheta_ctrl",
    "finite",
)


def _save_npz(path, arrays, fp):
    tmp = path + ".tmp.npz"
    np.savez(tmp, _fingerprint=np.array(fp), **arrays)
    os.replace(tmp, path)


def _load_npz(path, fp):
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["_fingerprint"]) != fp:
                return None
            return {k: f[k] for k in f.files if not k.startswith("_")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring damaged file {path}: {exc}", stacklevel=2)
        return None


def _controls_to_arrays(controls, seeds):
    return {
        "theta": np.stack([controls[s]["theta"] for s in seeds]),
        "train_loss": np.stack([controls[s]["train_loss"] for s in seeds]),
        "test_loss": np.stack([controls[s]["test_loss"] for s in seeds]),
        "steps": np.array([controls[s]["steps"] for s in seeds]),
    }


def _controls_from_arrays(a, seeds):
    return {
        s: {
            "theta": a["theta"][j],
            "train_loss": a["train_loss"][j],
            "test_loss": a["test_loss"][j],
            "steps": int(a["steps"][j]),
        }
        for j, s in enumerate(seeds)
    }


def _retrain_resumable(
    model, data, groups, Xt, yt, seeds, sgd, out, fp, n_jobs, progress, say
):
    runs = os.path.join(out, "runs")
    os.makedirs(runs, exist_ok=True)
    cpath = os.path.join(runs, "controls.npz")
    saved = _load_npz(cpath, fp)
    controls = None if saved is None else _controls_from_arrays(saved, seeds)
    per_group = {}
    for g in range(len(groups)):
        a = _load_npz(os.path.join(runs, f"group{g:03d}.npz"), fp)
        if a is not None:
            per_group[g] = {
                k: (bool(a[k]) if k == "finite" else a[k]) for k in _RUN_KEYS
            }
    if per_group or controls is not None:
        say(
            f"resuming: controls {'done' if controls else 'to do'}, "
            f"{len(per_group)} of {len(groups)} groups done"
        )
    t0 = time.perf_counter()
    todo = len(groups) - len(per_group)
    state = {"done": 0}

    def on_controls(ctl):
        _save_npz(cpath, _controls_to_arrays(ctl, seeds), fp)
        say(
            f"controls: {len(seeds)} full-data SGD runs in "
            f"{time.perf_counter() - t0:.0f}s"
        )

    def on_group(g, res):
        _save_npz(os.path.join(runs, f"group{g:03d}.npz"), res, fp)
        state["done"] += 1
        k = state["done"]
        if k == todo or k % max(1, todo // 14) == 0:
            el = time.perf_counter() - t0
            say(f"retrained {k}/{todo} groups x {len(seeds)} seeds, {el:.0f}s elapsed")

    _, fresh = mlp.sgd_runs(
        model,
        data.X_train,
        data.y_train,
        groups,
        Xt,
        yt,
        seeds=seeds,
        sgd=sgd,
        n_jobs=n_jobs,
        progress=progress,
        controlled=True,
        skip=list(per_group),
        on_group=on_group,
        on_controls=on_controls,
        controls=controls,
    )
    per_group.update(fresh)
    return per_group, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def seed_spread(eff):
    """Per quantity: median over groups of the max-min spread across seeds,
    of |mean effect|, and the share of groups whose spread exceeds it."""
    spread = eff.seed_spread()
    mean_q = quantities(eff)
    out = {}
    per_q = {"self_loss": spread["self_loss"]}
    if "test_loss" in spread:
        for t in range(spread["test_loss"].shape[1]):
            per_q[f"test_loss[{t}]"] = spread["test_loss"][:, t]
    for q, s in per_q.items():
        m = np.abs(mean_q[q])
        out[q] = {
            "median_spread": float(np.median(s)),
            "median_abs_effect": float(np.median(m)),
            "share_spread_exceeds_effect": float(np.mean(s > m)),
            "max_spread": float(np.max(s)),
        }
    return out


def per_seed_spearman(pred, eff):
    """Spearman of predicted vs each single seed's actual effect."""
    qp = quantities(pred)
    out = {}
    R = eff.self_loss_seeds.shape[1]
    for q in qp:
        if q == "param_norm":
            continue
        rhos = []
        for r in range(R):
            if q == "self_loss":
                a = eff.self_loss_seeds[:, r]
            else:
                t = int(q[len("test_loss[") : -1])
                a = eff.test_loss_seeds[:, r, t]
            rhos.append(metrics.agreement(qp[q], a)["spearman"])
        rhos = np.array(rhos)
        out[q] = {
            "mean": float(np.nanmean(rhos)),
            "min": float(np.nanmin(rhos)),
            "max": float(np.nanmax(rhos)),
        }
    return out


def summary_table(table, spreads, seed_rho, kinds):
    defs = list(table)
    qs = list(table[defs[0]]["influence"])
    width = max(len(q) for q in list(qs) + list(KINDS)) + 2
    lines = [
        (
            "Spearman rho, predicted (damped influence) vs actual (mean "
            "over seeds), all groups"
        )
    ]
    head = (
        f"{'quantity':<{width}}{'controlled':>12}{'plain':>12}"
        f"{'1 seed (ctrl)':>16}{'slope (ctrl)':>14}"
    )
    lines += [head, "-" * len(head)]
    for q in qs:
        c = table["controlled"]["influence"][q]["all"]
        p = table["plain"]["influence"][q]["all"]
        s = seed_rho["controlled"].get(q)
        one = f"{s['mean']:.3f}" if s else "-"
        lines.append(
            f"{q:<{width}}{c['spearman']:>12.3f}{p['spearman']:>12.3f}"
            f"{one:>16}{c['slope']:>14.3g}"
        )
    lines += [
        "",
        ("spread of the actual effect across seeds (max - min), median over groups"),
    ]
    head = (
        f"{'quantity':<{width}}{'def':>12}{'spread':>12}{'|effect|':>12}"
        f"{'spread>|effect|':>17}"
    )
    lines += [head, "-" * len(head)]
    for q in spreads["controlled"]:
        for d in ("controlled", "plain"):
            s = spreads[d][q]
            lines.append(
                f"{q:<{width}}{d:>12}{s['median_spread']:>12.3g}"
                f"{s['median_abs_effect']:>12.3g}"
                f"{s['share_spread_exceeds_effect']:>17.2f}"
            )
    types = [k for k in KINDS if k in set(kinds)]
    for q in ("self_loss", "test_loss[0]"):
        if q not in qs:
            continue
        lines += ["", f"Spearman rho by group type: {q}"]
        head = f"{'group type':<{width}}{'controlled':>12}{'plain':>12}"
        lines += [head, "-" * len(head)]
        for k in types:
            c = table["controlled"]["influence"][q][k]["spearman"]
            p = table["plain"]["influence"][q][k]["spearman"]
            lines.append(f"{k:<{width}}{c:>12.3f}{p:>12.3f}")
    return "\n".join(lines)


def _write_csv(path, names, kinds, pred, actual):
    qp = quantities(pred)
    header = ["group", "type", "name", "removed_weight"]
    cols = []
    for q in qp:
        header.append(f"predicted:{q}")
        cols.append(qp[q])
        for d, eff in actual.items():
            header.append(f"{d}:{q}")
            cols.append(quantities(eff)[q])
    header += ["cg_iterations", "cg_residual"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for g in range(len(names)):
            w.writerow(
                [g, kinds[g], names[g], repr(float(pred.group_weight[g]))]
                + [repr(float(c[g])) for c in cols]
                + [int(pred.solver_iterations[g]), repr(float(pred.solver_residual[g]))]
            )


def _figures(out, title, pred, actual, kinds):
    try:
        from . import plots
    except ImportError:
        return []
    files = []
    qp = quantities(pred)
    for d, eff in actual.items():
        qa = quantities(eff)
        files.append(
            plots.scatter_grid(
                os.path.join(out, f"mlp_pred_vs_actual_{d}.png"),
                f"{title}: damped influence vs SGD retraining ({d}, mean over "
                f"{eff.self_loss_seeds.shape[1]} seeds)",
                qp,
                qa,
                kinds,
            )
        )
    files.append(
        _spread_figure(
            os.path.join(out, "mlp_seed_spread.png"),
            title,
            pred,
            actual["controlled"],
            kinds,
        )
    )
    return files


def _spread_figure(path, title, pred, eff, kinds):
    """Predicted vs actual self-loss with the range over seeds as bars."""
    from . import plots

    plt = plots.plt
    kinds = np.asarray(kinds)
    colours = plots._kind_colours(kinds)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    panels = [("self_loss", eff.self_loss_seeds, pred.self_loss)]
    if eff.test_loss_seeds is not None:
        panels.append(
            ("test_loss[0]", eff.test_loss_seeds[:, :, 0], pred.test_loss[:, 0])
        )
    for ax, (q, seeds_q, p) in zip(axes, panels):
        lo, hi = seeds_q.min(axis=1), seeds_q.max(axis=1)
        mean = seeds_q.mean(axis=1)
        for k, c in colours.items():
            sel = kinds == k
            ax.errorbar(
                mean[sel],
                p[sel],
                xerr=[mean[sel] - lo[sel], hi[sel] - mean[sel]],
                fmt="o",
                ms=3,
                color=c,
                elinewidth=0.7,
                label=k,
            )
        ax.set_xlabel("actual (controlled), mean and range over seeds", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.set_title(q, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"{title}: spread of actual effects across seeds", fontsize=10)
    return plots._save(fig, path, rect=(0, 0.1, 1, 0.95))


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


def run_mlp_experiment(
    dataset,
    out,
    *,
    seeds=3,
    per_type=10,
    hidden=(128, 32),
    l2_reg=1.0,
    activation="tanh",
    train_epochs=100,
    train_lr=0.1,
    polish_iter=200,
    sgd=None,
    damping=None,
    curvature="hessian",
    cg_tol=1e-6,
    cg_maxiter=None,
    seed=0,
    n_jobs=None,
    progress=None,
    figures=True,
    say=print,
):
    """Run (or continue) the MLP study on one data set; returns the metrics.

    ``sgd`` is the retraining :class:`groupinf.mlp.SGDConfig` (default 20
    epochs, lr 0.5, batches of 50); ``damping`` defaults to
    ``1 / sgd.horizon()`` = batch_size / (lr * epochs), the curvature below
    which a retraining run of that length cannot relax.
    """
    t_start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    sgd = (sgd or mlp.SGDConfig(epochs=20, lr=0.5, batch_size=50)).check()
    seeds = mlp._check_seeds(seeds)
    per_type = mlp._check_int(per_type, "per_type")
    if damping is None:
        damping = 1.0 / sgd.horizon()
    damping = mlp._check_pos(damping, "damping", allow_zero=True)
    data = load_any(dataset)
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    say(
        f"{data.name}: {n} training rows, {X.shape[1]} features, "
        f"{len(np.unique(y))} classes"
    )

    # 1. theta_0.
    train = {
        "dataset": dataset,
        "hidden": list(hidden),
        "l2_reg": float(l2_reg),
        "activation": activation,
        "epochs": train_epochs,
        "lr": train_lr,
        "batch_size": 50,
        "polish_iter": polish_iter,
        "seed": seed,
        "polish": "lbfgs-armijo",
    }
    model = _fit_cached(out, data, train, say)
    acc_tr = float(np.mean(model.predict(X) == y))
    acc_te = float(np.mean(model.predict(data.X_test) == data.y_test))
    say(
        f"theta_0: {model.n_params} parameters, ||grad F|| = "
        f"{model.grad_norm_:.3g}, train accuracy {acc_tr:.3f}, test accuracy "
        f"{acc_te:.3f} (training took {model.train_info_['seconds']:.0f}s)"
    )

    # 2. Test points; their damped inverse-curvature directions.
    test_idx = choose_test_points(model, data, seed)
    Xt, yt = data.X_test[test_idx], data.y_test[test_idx]
    t = time.perf_counter()
    curv = mlp.curvature(model, X, y, kind=curvature, damping=damping)
    grads_t = mlp._test_gradients(model, *model._check(Xt, yt))
    sol = curv.solve(grads_t, tol=cg_tol, maxiter=cg_maxiter)
    mlp.raise_if_failed(
        sol,
        f"test-point solves ({curvature}, damping={damping:g})",
        "Raise --damping or use --curvature gauss-newton.",
    )
    t_test = time.perf_counter() - t

    # 3. Groups.
    groups, names, kinds = build_groups(
        model, data, curv, test_idx, sol.x, per_type=per_type, seed=seed
    )
    cfg = {
        "dataset": dataset,
        "data_name": data.name,
        "n_train": n,
        "model": "mlp",
        "train": train,
        "n_params": model.n_params,
        "theta0_grad_norm": model.grad_norm_,
        "train_accuracy": acc_tr,
        "test_accuracy": acc_te,
        "sgd": vars(sgd),
        "sgd_horizon": sgd.horizon(),
        "seeds": seeds,
        "damping": damping,
        "curvature": curvature,
        "cg_tol": cg_tol,
        "per_type": per_type,
        "test_points": test_idx.tolist(),
        "n_groups": len(groups),
        "groups_hash": _hash([g.tolist() for g in groups]),
    }
    fp = _hash(
        {k: cfg[k] for k in ("train", "sgd", "seeds", "test_points", "groups_hash")}
    )
    cfg["fingerprint"] = fp
    write_json(os.path.join(out, "config.json"), cfg)
    _save_groups(out, groups, names, kinds, n)
    say(
        f"{len(groups)} groups of {len(set(kinds))} types, sizes "
        f"{min(g.size for g in groups)}..{max(g.size for g in groups)}; test "
        f"points {test_idx.tolist()}"
    )

    # 4. Predicted effects.
    t = time.perf_counter()
    pred = mlp.influence(
        model,
        X,
        y,
        groups,
        Xt,
        yt,
        damping=damping,
        curvature=curvature,
        cg_tol=cg_tol,
        cg_maxiter=cg_maxiter,
    )
    t_pred = time.perf_counter() - t
    np.savez(os.path.join(out, "pred.npz"), **pred.arrays())
    say(
        f"influence ({curvature}, damping {damping:g}): CG "
        f"{int(pred.solver_iterations.max())} iterations at most, relative "
        f"residual <= {pred.solver_residual.max():.1e}, {t_pred:.1f}s"
    )

    # 5. Actual effects: controls, then every group for every seed.
    say(
        f"retraining: SGD from theta_0, {sgd.epochs} epochs, lr {sgd.lr:g}, "
        f"batches of {sgd.batch_size}, seeds {seeds[0]}..{seeds[-1]} "
        f"({len(seeds)}), {len(seeds) * (len(groups) + 1)} runs"
    )
    per_group, t_retrain = _retrain_resumable(
        model, data, groups, Xt, yt, seeds, sgd, out, fp, n_jobs, progress, say
    )
    C = G.as_matrix(groups, n)
    actual = {
        d: mlp.assemble(
            per_group, len(groups), seeds, C, d, model.n_params, Xt.shape[0]
        )
        for d in ("controlled", "plain")
    }
    for d, eff in actual.items():
        np.savez(os.path.join(out, f"actual_{d}.npz"), **eff.arrays())

    # 6. Agreement, spreads, tables, figures.
    table = {d: agreement({"influence": pred}, eff, kinds) for d, eff in actual.items()}
    spreads = {d: seed_spread(eff) for d, eff in actual.items()}
    seed_rho = {d: per_seed_spearman(pred, eff) for d, eff in actual.items()}
    n_runs = len(seeds) * (len(groups) + 1)
    timings = {
        "test_point_solves": t_test,
        "influence": t_pred,
        "retrain": t_retrain,
        "retrain_runs_per_second": n_runs / t_retrain if t_retrain else None,
        "total": time.perf_counter() - t_start,
    }
    result = {
        "config": cfg,
        "timings_s": timings,
        "agreement": table,
        "seed_spread": spreads,
        "per_seed_spearman": seed_rho,
        "cg": {
            "max_iterations": int(pred.solver_iterations.max()),
            "max_residual": float(pred.solver_residual.max()),
            "test_point_iterations": sol.n_iter.tolist(),
        },
        "runs_finite": bool(all(e.converged.all() for e in actual.values())),
    }
    write_json(os.path.join(out, "metrics.json"), result)
    _write_csv(os.path.join(out, "groups.csv"), names, kinds, pred, actual)
    summary = summary_table(table, spreads, seed_rho, kinds)
    head = (
        f"n = {n}, MLP {model.sizes} ({model.n_params} parameters, "
        f"{activation}), l2_reg = {l2_reg:g}, theta_0 ||grad F|| = "
        f"{model.grad_norm_:.3g}, test accuracy {acc_te:.3f}; "
        f"{len(groups)} groups x {len(seeds)} seeds; retraining SGD "
        f"{sgd.epochs} epochs, lr {sgd.lr:g}, batch {sgd.batch_size}; "
        f"damping {damping:g} ({curvature}); CG <= "
        f"{result['cg']['max_iterations']} iterations, residual <= "
        f"{result['cg']['max_residual']:.1e}; retraining took "
        f"{t_retrain:.0f}s ({timings['retrain_runs_per_second']:.2f} runs/s)"
    )
    summary = head + "\n\n" + summary
    with open(os.path.join(out, "summary.txt"), "w") as fh:
        fh.write(summary + "\n")
    figs = _figures(out, data.name, pred, actual, kinds) if figures else []
    say("")
    say(summary)
    say(f"\ntotal {timings['total']:.0f}s")
    if figs:
        say("figures: " + ", ".join(os.path.basename(f) for f in figs))
    return result


def _parse_hidden(text):
    try:
        hidden = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"--hidden must be comma-separated positive integers, got {text!r}"
        ) from None
    if not hidden or min(hidden) < 1:
        raise ValueError(
            f"--hidden must be comma-separated positive integers, got {text!r}"
        )
    return hidden


def experiment_main(args, check_out_dir, say=print):
    """``groupinf experiment --model mlp``: validate the options, run."""
    per_type = 10 if args.groups is None else args.groups
    if per_type < 1:
        raise ValueError(f"--groups must be >= 1, got {per_type}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.n_jobs is not None and args.n_jobs < 1:
        raise ValueError(f"--n-jobs must be >= 1, got {args.n_jobs}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    l2 = 1.0 if args.l2 is None else args.l2
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"--l2 must be finite and >= 0, got {l2}")
    for name in ("epochs", "train_epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
            )
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be finite and > 0, got {args.lr}")
    if args.damping is not None and not (
        np.isfinite(args.damping) and args.damping >= 0
    ):
        raise ValueError(f"--damping must be finite and >= 0, got {args.damping}")
    hidden = _parse_hidden(args.hidden)
    name = os.path.basename(args.dataset).split(".")[0] or "data"
    out = args.out or os.path.join("groupinf-study", f"{name}-mlp")
    check_out_dir(out)
    # One BLAS thread in this process too: its GEMMs are small or many, and
    # the retraining workers (one per core) use one each.
    with mlp._limit_blas_threads(1):
        run_mlp_experiment(
            args.dataset,
            out,
            seeds=args.seeds,
            per_type=per_type,
            hidden=hidden,
            l2_reg=l2,
            train_epochs=args.train_epochs,
            sgd=mlp.SGDConfig(
                epochs=args.epochs, lr=args.lr, batch_size=args.batch_size
            ),
            damping=args.damping,
            curvature=args.curvature,
            seed=args.seed,
            n_jobs=args.n_jobs,
            progress=False if args.no_progress else None,
            say=say,
        )
    return 0
