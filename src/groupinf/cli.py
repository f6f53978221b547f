"""Command line: ``groupinf run`` (also ``python -m groupinf run``).

The main job: on the embedded Adult data, choose l2_reg by cross-validation,
fit, build groups (random groups of 0.25 % to 25 % of n, and one group per
value of each attribute column), then put first-order predicted and actual
(retrained) effects side by side for the self-loss and the test loss of
3 highest-loss and 3 random test points. Prints agreement per quantity and
writes the per-group numbers to CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import sys
import time

import numpy as np

from . import datasets, groups as _groups, metrics
from ._influence import influence
from ._model import fit
from ._retrain import retrain
from .model_selection import cross_validate_l2
from .study import _drop_invalid, _top_features, choose_test_points, write_json


def _parser():
    p = argparse.ArgumentParser(
        prog="groupinf",
        description="Group influence for L2-regularised logistic regression.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="predicted vs actual group effects on a dataset (default adult)"
    )
    run.add_argument("--dataset", default="adult",
                     choices=datasets.available_datasets())
    run.add_argument("--out", default="groupinf-out",
                     help="output folder (default: ./groupinf-out)")
    lam = run.add_mutually_exclusive_group()
    lam.add_argument("--l2", type=float, default=None,
                     help="l2_reg to use instead of cross-validation")
    lam.add_argument("--cv", action="store_true", default=True,
                     help="choose l2_reg by 3-fold cross-validation (default)")
    run.add_argument("--n-random", type=int, default=40,
                     help="number of random groups (default 40)")
    run.add_argument("--max-features", type=int, default=None,
                     help="keep only the most frequently non-zero features "
                          "(a bag of words' most frequent words)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--n-jobs", type=int, default=None,
                     help="threads for retraining (default: one per core)")
    run.add_argument("--no-progress", action="store_true",
                     help="never show progress bars")

    exp = sub.add_parser(
        "experiment",
        help="the full accuracy study: every group type and prediction tier",
    )
    exp.add_argument("--dataset", default=None,
                     help="adult (the default; mnist-10 with --model mlp), "
                          "mnist, mnist-10, spam, fashion-mnist, "
                          "counterexample-curvature, counterexample-gaussian, "
                          "or a .csv/.npz/.svmlight file")
    exp.add_argument("--out", default=None,
                     help="output folder (default: groupinf-study/<dataset>)")
    exp.add_argument("--groups", type=int, default=None,
                     help="groups per group type (default 20; 10 with "
                          "--model mlp)")
    lam2 = exp.add_mutually_exclusive_group()
    lam2.add_argument("--l2", type=float, default=None, help="l2_reg to use")
    lam2.add_argument("--cv", action="store_true",
                      help="choose l2_reg by cross-validation (the default)")
    exp.add_argument("--sweep-l2", action="store_true",
                     help="repeat the accuracy measurement across l2_reg / n")
    exp.add_argument("--max-features", type=int, default=None,
                     help="keep only the most frequently non-zero features")
    exp.add_argument("--no-plugin", action="store_true",
                     help="skip the plug-in variants")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--n-jobs", type=int, default=None)
    exp.add_argument("--no-progress", action="store_true")
    exp.add_argument("--dask-scheduler", nargs="?", const="local",
                     default=None, metavar="ADDRESS",
                     help="run the refits on a Dask cluster at ADDRESS "
                          "(e.g. tcp://10.0.0.5:8786); without an address, "
                          "on a local cluster (needs groupinf[dask])")
    exp.add_argument("--case", choices=("dependence", "sources"), default=None,
                     help="a case study instead of the accuracy study: which "
                          "training data a feature dependence comes from, or "
                          "credit assignment to data sources")
    exp.add_argument("--feature", default=None,
                     help="--case dependence: a column name, an attribute "
                          "with one-hot columns (e.g. sex), or a column index")
    exp.add_argument("--source-column", default=None,
                     help="--case sources: one source per value of this "
                          "column (default for spam: labeling functions)")
    # The non-convex study (groupinf.mlp_study); defaults are its own.
    exp.add_argument("--model", choices=("logistic", "mlp"), default="logistic",
                     help="logistic regression (default) or the MLP study "
                          "(--l2 is then the weight decay, default 1.0)")
    exp.add_argument("--seeds", type=int, default=3,
                     help="--model mlp: SGD seeds per group (default 3; 50 "
                          "for the full run)")
    exp.add_argument("--hidden", default="128,32",
                     help="--model mlp: hidden layer widths (default 128,32)")
    exp.add_argument("--train-epochs", type=int, default=100,
                     help="--model mlp: epochs training theta_0 (default 100)")
    exp.add_argument("--epochs", type=int, default=20,
                     help="--model mlp: SGD epochs per retrain (default 20)")
    exp.add_argument("--lr", type=float, default=0.5,
                     help="--model mlp: retraining step size (default 0.5)")
    exp.add_argument("--batch-size", type=int, default=50,
                     help="--model mlp: retraining mini-batch (default 50)")
    exp.add_argument("--damping", type=float, default=None,
                     help="--model mlp: damping of the curvature (default "
                          "batch-size / (lr * epochs))")
    exp.add_argument("--curvature", choices=("hessian", "gauss-newton"),
                     default="hessian",
                     help="--model mlp: exact Hessian (default) or Gauss-Newton")

    data = sub.add_parser("data", help="manage the local data cache")
    dsub = data.add_subparsers(dest="data_command", required=True)
    fetch = dsub.add_parser("fetch", help="download and cache data sets")
    fetch.add_argument("names", nargs="+")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_main(args)
        if args.command == "experiment":
            return experiment_main(args)
        if args.command == "data":
            return datasets.fetch_main(args.names)
    except (ValueError, TypeError, OSError) as exc:
        print(f"groupinf: error: {exc}", file=sys.stderr)
        return 2
    return 0


def experiment_main(args):
    from .study import run_experiment

    if args.model == "mlp":
        from .mlp_study import experiment_main as mlp_main

        if args.dataset is None:
            args.dataset = "mnist-10"
        given = [flag for flag, value in (
            ("--case", args.case), ("--feature", args.feature),
            ("--source-column", args.source_column),
            ("--dask-scheduler", args.dask_scheduler),
            ("--cv", args.cv), ("--sweep-l2", args.sweep_l2))
            if value not in (None, False)]
        if given:
            raise ValueError(f"--model mlp does not take {', '.join(given)} "
                             f"(the MLP study has its own options; see "
                             f"groupinf experiment --help)")
        return mlp_main(args, check_out_dir, say=_say)
    if args.dataset is None:
        args.dataset = "adult"
    if args.groups is None:
        args.groups = 20
    if args.groups < 1:
        raise ValueError(f"--groups must be >= 1, got {args.groups}")
    check_common(args)
    if args.case or args.feature is not None or args.source_column is not None:
        from .casestudies import run_case

        return run_case(args, check_out_dir, say=_say)
    name = os.path.basename(args.dataset).split(".")[0] or "data"
    if args.out == "":
        raise ValueError("--out must not be empty")
    out = args.out or os.path.join("groupinf-study", name)
    check_out_dir(out)
    with _dask_client(args.dask_scheduler, args.n_jobs) as client:
        run_experiment(args.dataset, out, l2_reg=args.l2,
                       per_type=args.groups, seed=args.seed,
                       n_jobs=args.n_jobs,
                       progress=False if args.no_progress else None,
                       sweep_l2=args.sweep_l2, max_features=args.max_features,
                       plugin=not args.no_plugin, say=_say, executor=client)
    return 0


@contextlib.contextmanager
def _dask_client(address, n_workers):
    """A Dask client for --dask-scheduler (None: no client at all)."""
    if address is None:
        yield None
        return
    try:
        import distributed
    except ImportError:
        raise ValueError("--dask-scheduler needs Dask: pip install "
                         "'groupinf[dask]'") from None
    if address == "local":
        cluster = distributed.LocalCluster(
            n_workers=n_workers or max(1, os.cpu_count() or 1),
            threads_per_worker=1, dashboard_address=None)
        _say(f"dask: local cluster with {len(cluster.workers)} workers")
    else:
        cluster = None
        _say(f"dask: connecting to {address}")
    try:
        try:
            client = distributed.Client(cluster if cluster else address,
                                        timeout=30)
        except OSError as exc:
            raise OSError(f"--dask-scheduler: cannot reach {address}: {exc}") \
                from None
        with client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def _say(msg):
    print(msg, flush=True)


def run_main(args):
    if args.n_random < 0:
        raise ValueError(f"--n-random must be >= 0, got {args.n_random}")
    check_common(args)
    check_out_dir(args.out)
    progress = False if args.no_progress else None
    times = {}

    # 1. Data and regularisation.
    t = time.perf_counter()
    data = datasets.load_dataset(args.dataset)
    if args.max_features is not None and args.max_features < data.X_train.shape[1]:
        data = _top_features(data, args.max_features)
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    times["load"] = time.perf_counter() - t
    _say(f"{data.name}: {n} training rows, {X.shape[1]} features, "
         f"{data.X_test.shape[0]} test rows")
    t = time.perf_counter()
    if args.l2 is not None:
        l2_reg, cv = args.l2, None
    else:
        _say("choosing l2_reg by 3-fold cross-validation ...")
        l2_reg, cv = cross_validate_l2(X, y, seed=args.seed)
    times["cv"] = time.perf_counter() - t

    # 2. Fit.
    t = time.perf_counter()
    model = fit(X, y, l2_reg)
    times["fit"] = time.perf_counter() - t
    _say(f"l2_reg = {l2_reg:.6g} (l2_reg/n = {l2_reg / n:.1e}); fit: "
         f"{model.n_iter_} Newton steps, ||grad|| = {model.grad_norm_:.2e}")

    # 3. Groups and test points.
    sizes = _groups.size_grid(n, args.n_random)
    rand = _groups.random_groups(n, sizes, seed=args.seed)
    attr, names = _groups.attribute_groups(data.groups_train)
    group_list = rand + attr
    kinds = ["random"] * len(rand) + ["attribute"] * len(attr)
    labels = [("random", f"size {k}") for k in sizes] + names
    # A group that removes a whole class (e.g. "digit = 3") has no refit:
    # the unpenalised intercept would run off. Left out, and said so.
    group_list, labels, kinds, dropped = _drop_invalid(
        group_list, labels, kinds, model, data)
    n_rand = kinds.count("random")
    test_idx = choose_test_points(model, data, args.seed)
    Xt, yt = data.X_test[test_idx], data.y_test[test_idx]
    _say(f"{len(group_list)} groups ({n_rand} random, "
         f"{len(group_list) - n_rand} by attribute value; {dropped} left out "
         f"for removing a whole class); test points {test_idx.tolist()}")

    # 4. Predicted and actual effects.
    t = time.perf_counter()
    pred = influence(model, X, y, group_list, Xt, yt)
    times["influence"] = time.perf_counter() - t
    t = time.perf_counter()
    act = retrain(model, X, y, group_list, Xt, yt, n_jobs=args.n_jobs,
                  progress=progress)
    times["retrain"] = time.perf_counter() - t

    # 5. Agreement, outputs.
    table = _agreement_table(pred, act, np.array(kinds))
    _print_table(table, len(group_list), times, act)
    _write_outputs(args.out, data, l2_reg, cv, test_idx, labels, kinds, pred,
                   act, table, times, model)
    _say(f"wrote {os.path.join(args.out, 'groups.csv')} and metrics.json")
    return 0


def _quantities(eff):
    q = {"self_loss": eff.self_loss, "param_norm": eff.param_norm}
    for t in range(eff.test_loss.shape[1]):
        q[f"test_loss[{t}]"] = eff.test_loss[:, t]
    return q


def _agreement_table(pred, act, kinds):
    rows = []
    qp, qa = _quantities(pred), _quantities(act)
    for name in qp:
        row = {"quantity": name, **metrics.agreement(qp[name], qa[name])}
        for kind in ("random", "attribute"):
            sel = kinds == kind
            row[f"spearman_{kind}"] = metrics.agreement(
                qp[name][sel], qa[name][sel])["spearman"]
        rows.append(row)
    return rows


def _print_table(table, n_groups, times, act):
    head = (f"{'quantity':<14}{'spearman':>9}{'pearson':>9}{'kendall':>9}"
            f"{'slope':>8}{'rho(rand)':>11}{'rho(attr)':>11}")
    _say("")
    _say(f"first-order influence vs exact retraining, {n_groups} groups")
    _say(head)
    _say("-" * len(head))
    for r in table:
        _say(f"{r['quantity']:<14}{r['spearman']:>9.3f}{r['pearson']:>9.3f}"
             f"{r['kendall']:>9.3f}{r['slope']:>8.3f}"
             f"{r['spearman_random']:>11.3f}{r['spearman_attribute']:>11.3f}")
    _say("")
    _say("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
    _say(f"refits: all converged = {bool(act.converged.all())}, max ||grad|| "
         f"= {act.grad_norm.max():.2e}, mean Newton steps = "
         f"{act.n_iter.mean():.1f}")


def _write_outputs(out, data, l2_reg, cv, test_idx, labels, kinds, pred, act,
                   table, times, model):
    os.makedirs(out, exist_ok=True)
    T = pred.test_loss.shape[1]
    header = ["group", "kind", "column", "value", "n_removed",
              "pred_self_loss", "actual_self_loss", "pred_param_norm",
              "actual_param_norm"]
    margins = pred.test_margin is not None  # binary models only
    for t in range(T):
        header += [f"pred_test_loss_{t}", f"actual_test_loss_{t}"]
        if margins:
            header += [f"pred_test_margin_{t}", f"actual_test_margin_{t}"]
    header += ["refit_grad_norm", "refit_converged", "refit_newton_steps"]
    with open(os.path.join(out, "groups.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for g, (col, val) in enumerate(labels):
            row = [g, kinds[g], col, val, f"{pred.group_weight[g]:.0f}",
                   _num(pred.self_loss[g]), _num(act.self_loss[g]),
                   _num(pred.param_norm[g]), _num(act.param_norm[g])]
            for t in range(T):
                row += [_num(pred.test_loss[g, t]), _num(act.test_loss[g, t])]
                if margins:
                    row += [_num(pred.test_margin[g, t]),
                            _num(act.test_margin[g, t])]
            row += [_num(act.grad_norm[g]), bool(act.converged[g]),
                    int(act.n_iter[g])]
            w.writerow(row)
    meta = {
        "dataset": data.name, "n_train": int(data.X_train.shape[0]),
        "n_features": int(data.X_train.shape[1]), "l2_reg": l2_reg,
        "cross_validation": cv, "test_points": [int(i) for i in test_idx],
        "fit": {"n_iter": model.n_iter_, "grad_norm": model.grad_norm_},
        "agreement": table, "timings_s": times,
    }
    write_json(os.path.join(out, "metrics.json"), meta)


def _num(x):
    """A float as the shortest text that reads back exactly."""
    return repr(float(x))


def check_out_dir(out):
    """Create the output folder now, so a bad --out fails before the work."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".groupinf-write-test")
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"--out {out!r} is not a writable folder: {exc}") from None


def check_common(args):
    if getattr(args, "max_features", None) is not None and args.max_features < 1:
        raise ValueError(f"--max-features must be >= 1, got {args.max_features}")
    if args.n_jobs is not None and args.n_jobs < 1:
        raise ValueError(f"--n-jobs must be >= 1, got {args.n_jobs}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.l2 is not None and not (np.isfinite(args.l2) and args.l2 > 0):
        raise ValueError(f"--l2 must be finite and > 0, got {args.l2}")
