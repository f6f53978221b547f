"""The study pipeline, counterexamples and tiers against exact retraining."""

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

import groupinf
from groupinf import counterexamples, study


def _rel_err(pred, act):
    return np.linalg.norm(pred - act) / np.linalg.norm(act)


def test_newton_is_far_closer_to_retraining_than_first_order(cancer):
    X, y = cancer
    model = groupinf.fit(X, y, 1.0)
    n = y.size
    groups = groupinf.groups.random_groups(n, groupinf.groups.size_grid(n, 12,
                                                                        0.01, 0.3))
    act = groupinf.retrain(model, X, y, groups, X[:4], y[:4])
    errs = {}
    for method in ("first-order", "second-order", "newton"):
        pred = groupinf.influence(model, X, y, groups, X[:4], y[:4], method=method)
        errs[method] = _rel_err(pred.params, act.params)
    assert errs["newton"] < 0.5 * errs["first-order"]
    assert errs["second-order"] < errs["first-order"]


def test_curvature_counterexample_breaks_first_order_not_newton():
    data = counterexamples.load_counterexample("counterexample-curvature")
    X, y = data.X_train, data.y_train
    model = groupinf.fit(X, y, counterexamples.L2_REG[data.name])
    groups, _ = counterexamples.designed_groups(data)
    act = groupinf.retrain(model, X, y, groups, data.X_test, data.y_test)
    fo = groupinf.influence(model, X, y, groups, data.X_test, data.y_test)
    nw = groupinf.influence(model, X, y, groups, data.X_test, data.y_test,
                            method="newton")
    rho_fo = [spearmanr(fo.test_loss[:, t], act.test_loss[:, t])[0] for t in range(4)]
    rho_nw = [spearmanr(nw.test_loss[:, t], act.test_loss[:, t])[0] for t in range(4)]
    assert min(rho_fo) < 0.8
    assert min(rho_nw) > 0.95


def test_gaussian_counterexample_adversarial_points():
    data = counterexamples.load_counterexample("counterexample-gaussian")
    X, y = data.X_train, data.y_train
    model = groupinf.fit(X, y, 1.0)
    n = y.size
    groups = groupinf.groups.random_groups(n, groupinf.groups.size_grid(n, 20,
                                                                        0.02, 0.5))
    idx, rho = counterexamples.adversarial_test_points(model, X, y, groups,
                                                       data.X_test, data.y_test)
    assert rho[idx].max() <= np.sort(rho)[2] + 1e-12
    act = groupinf.retrain(model, X, y, groups, data.X_test[idx], data.y_test[idx])
    fo = groupinf.influence(model, X, y, groups, data.X_test[idx], data.y_test[idx])
    nw = groupinf.influence(model, X, y, groups, data.X_test[idx], data.y_test[idx],
                            method="newton")
    r_fo = np.mean([spearmanr(fo.test_loss[:, t], act.test_loss[:, t])[0]
                    for t in range(3)])
    r_nw = np.mean([spearmanr(nw.test_loss[:, t], act.test_loss[:, t])[0]
                    for t in range(3)])
    assert r_nw > r_fo + 0.1


@pytest.mark.parametrize("method", study.TIERS)
def test_sparse_and_dense_inputs_give_the_same_numbers(cancer, method):
    X, y = cancer
    X = np.where(np.abs(X) < 0.5, 0.0, X)  # a genuinely sparse pattern
    Xs = sp.csr_matrix(X)
    groups = [np.arange(0, 40), np.arange(100, 400, 3), np.array([7])]
    md = groupinf.fit(X, y, 2.0)
    ms = groupinf.fit(Xs, y, 2.0)
    pd_ = groupinf.influence(md, X, y, groups, X[:5], y[:5], method=method,
                             plugin=True)
    ps = groupinf.influence(ms, Xs, y, groups, Xs[:5], y[:5], method=method,
                            plugin=True)
    for f in ("params", "self_loss", "test_loss", "test_margin", "self_margin"):
        np.testing.assert_allclose(getattr(ps, f), getattr(pd_, f), rtol=1e-8,
                                   atol=1e-12, err_msg=f)
    ad = groupinf.retrain(md, X, y, groups, X[:5], y[:5])
    as_ = groupinf.retrain(ms, Xs, y, groups, Xs[:5], y[:5])
    np.testing.assert_allclose(as_.params, ad.params, rtol=1e-7, atol=1e-10)


def test_experiment_writes_outputs_and_resumes(tmp_path):
    out = str(tmp_path / "curv")
    res = study.run_experiment("counterexample-curvature", out, per_type=6,
                               say=lambda m: None)
    for name in ("config.json", "metrics.json", "groups.csv", "groups.npz",
                 "actual.npz", "pred_first-order.npz", "pred_newton.npz",
                 "summary.txt", "pred_vs_actual.png", "newton_vs_actual.png",
                 "leverage.png"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as fh:
        saved = json.load(fh)
    rho = saved["agreement"]["newton"]["self_loss"]["all"]["spearman"]
    assert rho == pytest.approx(res["agreement"]["newton"]["self_loss"]["all"]
                                ["spearman"])
    with np.load(os.path.join(out, "actual.npz"), allow_pickle=False) as f:
        assert f["_done"].all()
        params = f["params"].copy()

    # A second run loads the finished refits instead of redoing them.
    msgs = []
    res2 = study.run_experiment("counterexample-curvature", out, per_type=6,
                                say=msgs.append)
    assert res2["timings_s"]["retrain"] < res["timings_s"]["retrain"] + 1.0
    with np.load(os.path.join(out, "actual.npz"), allow_pickle=False) as f:
        np.testing.assert_array_equal(f["params"], params)

    # A damaged file is not trusted: it is recomputed.
    with open(os.path.join(out, "actual.npz"), "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(UserWarning, match="damaged"):
        study.run_experiment("counterexample-curvature", out, per_type=6,
                             say=lambda m: None)
    with np.load(os.path.join(out, "actual.npz"), allow_pickle=False) as f:
        np.testing.assert_allclose(f["params"], params, rtol=1e-10, atol=1e-14)


def test_experiment_cli_rejects_bad_arguments(capsys):
    from groupinf.cli import main

    assert main(["experiment", "--dataset", "no-such-data", "--out", "/tmp/x"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["experiment", "--groups", "0"]) == 2


def test_lanczos_leverage_equals_dense_eigenvalue():
    import scipy.linalg as sla

    from groupinf._influence import _leverage_lanczos

    rng = np.random.default_rng(3)
    p = 300
    A = rng.normal(size=(p, p))
    H = A @ A.T + p * np.eye(p)
    B = rng.normal(size=(p, 20))
    H_U = B @ B.T
    L = np.linalg.cholesky(H)
    S = sla.solve_triangular(L, H_U, lower=True)
    S = sla.solve_triangular(L, S.T, lower=True)
    expected = np.linalg.eigvalsh(0.5 * (S + S.T))[-1]
    assert _leverage_lanczos(L, H_U) == pytest.approx(expected, rel=1e-7)


def test_run_command_writes_plain_csv_and_strict_json(tmp_path, capsys):
    import csv

    from groupinf.cli import main

    out = tmp_path / "run"
    assert main(["run", "--l2", "3", "--n-random", "3", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "self_loss" in printed
    with open(out / "groups.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 100
    float(rows[0]["pred_self_loss"])  # plain numbers, no np.float64(...)
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    json.loads(text)


def test_run_command_checks_out_before_working(tmp_path, capsys):
    from groupinf.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", "--l2", "3", "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["run", "--n-jobs", "0"]) == 2
    assert main(["run", "--seed", "-1"]) == 2


def test_cross_validation_warns_at_the_edge_of_its_grid(cancer):
    from groupinf.model_selection import cross_validate_l2

    X, y = cancer
    with pytest.warns(UserWarning, match="edge of the grid"):
        l2, scores = cross_validate_l2(X, y, grid=(1.0, 10.0))
    assert scores["best"] == 1.0 and l2 == pytest.approx(y.size)


def test_run_on_a_softmax_dataset_drops_whole_class_groups(tmp_path, capsys,
                                                           monkeypatch):
    # Digits (10 classes) with an attribute whose values are the classes:
    # those groups remove a whole class and are left out, and the softmax
    # outputs have no margin columns.
    import csv

    from sklearn.datasets import load_digits

    from groupinf import cli, datasets

    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16.0
    y = y[:400]
    data = datasets.Dataset(
        name="digits-small", X_train=X[:300], y_train=y[:300], X_test=X[300:],
        y_test=y[300:], groups_train={"digit": y[:300].astype(str)},
        groups_test={"digit": y[300:].astype(str)},
        feature_names=tuple(f"p{i}" for i in range(64)),
        description="scikit-learn digits")
    monkeypatch.setattr(datasets, "load_dataset", lambda name: data)
    out = tmp_path / "o"
    code = cli.main(["run", "--l2", "1.0", "--out", str(out), "--n-random",
                     "4", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "10 left out for removing a whole class" in text
    rows = list(csv.reader(open(out / "groups.csv")))
    assert len(rows) == 1 + 4
    assert not any("margin" in h for h in rows[0])
