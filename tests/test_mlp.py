"""The MLP extension: derivatives against finite differences, CG against
dense solves, negative curvature, SGD retraining, and the quick study."""

import json
import os

import numpy as np
import pytest
from scipy.stats import spearmanr

from groupinf import mlp, mlp_study
from groupinf.cli import main


@pytest.fixture(scope="module")
def tiny():
    """40 points, 6 features, 3 classes, a (6, 5, 4, 3) tanh net."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    model = mlp.fit(X, y, hidden=(5, 4), l2_reg=0.3, epochs=30, polish_iter=0, seed=1)
    return X, y, model


def _fd(f, theta, v, eps=1e-5):
    # Fourth-order central difference of f along v.
    return (
        -f(theta + 2 * eps * v)
        + 8 * f(theta + eps * v)
        - 8 * f(theta - eps * v)
        + f(theta - 2 * eps * v)
    ) / (12 * eps)


def _dense(op, p):
    return op.matvec(np.eye(p))


def test_gradient_matches_finite_differences(tiny, rng):
    X, y, model = tiny
    g = model.gradient(X, y)
    for _ in range(3):
        v = rng.standard_normal(model.n_params)
        fd = _fd(lambda t: model.objective(X, y, t), model.params_, v)
        assert g @ v == pytest.approx(fd, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_hessian_vector_products_match_finite_differences(activation, rng):
    X = rng.standard_normal((30, 5))
    y = rng.integers(0, 4, 30)
    model = mlp.fit(
        X,
        y,
        hidden=(6, 3),
        l2_reg=0.2,
        activation=activation,
        epochs=10,
        polish_iter=0,
        seed=2,
    )
    curv = mlp.curvature(model, X, y)
    V = rng.standard_normal((4, model.n_params))
    HV = curv.matvec(V)
    # relu: the Hessian of a piecewise-linear net is the FD limit away from
    # kinks, so the step must stay small enough to cross none.
    eps = 1e-5 if activation == "tanh" else 1e-7
    for v, hv in zip(V, HV):
        fd = _fd(lambda t: model.gradient(X, y, t), model.params_, v, eps)
        np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_hessian_is_symmetric_and_batched_products_agree(tiny):
    X, y, model = tiny
    curv = mlp.curvature(model, X, y)
    H = _dense(curv, model.n_params)
    np.testing.assert_allclose(H, H.T, atol=1e-12 * np.abs(H).max())
    # One direction at a time gives the same products as the batch.
    single = np.vstack([curv.matvec(e[None]) for e in np.eye(model.n_params)[:7]])
    np.testing.assert_allclose(single, H[:7], rtol=1e-12, atol=1e-13)


def test_gauss_newton_products_match_explicit_jacobians(tiny):
    X, y, model = tiny
    p, eps = model.n_params, 1e-6
    th = model.params_
    J = np.stack(
        [
            (
                model.decision_function(X, th + eps * e)
                - model.decision_function(X, th - eps * e)
            )
            / (2 * eps)
            for e in np.eye(p)
        ],
        axis=-1,
    )  # (n, K, p)
    P = model.predict_proba(X)
    out_h = np.einsum("nk,kl->nkl", P, np.eye(P.shape[1])) - np.einsum(
        "nk,nl->nkl", P, P
    )
    GN = np.einsum("nkp,nkl,nlq->pq", J, out_h, J)
    GN += model.l2_reg * np.diag(model.layout.weight_mask())
    curv = mlp.curvature(model, X, y, kind="gauss-newton", damping=0.5)
    np.testing.assert_allclose(
        _dense(curv, p), GN + 0.5 * np.eye(p), rtol=1e-6, atol=1e-7
    )
    assert np.linalg.eigvalsh(GN).min() > -1e-8


def test_loss_jvp_matches_finite_differences(tiny, rng):
    X, y, model = tiny
    V = rng.standard_normal((3, model.n_params))
    J = mlp.loss_jvp(model, X, y, V)
    for m, v in enumerate(V):
        fd = _fd(lambda t: model.loss(X, y, t), model.params_, v)
        np.testing.assert_allclose(J[:, m], fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["hessian", "gauss-newton"])
def test_influence_cg_matches_dense_solve(tiny, kind):
    X, y, model = tiny
    # Damping past the most negative eigenvalue (theta_0 here is far from a
    # minimum, so the Hessian is indefinite) makes the operator definite.
    low = np.linalg.eigvalsh(
        _dense(mlp.curvature(model, X, y, kind=kind), model.n_params)
    ).min()
    damping = max(0.0, -low) + 2.0
    curv = mlp.curvature(model, X, y, kind=kind, damping=damping)
    A = _dense(curv, model.n_params)
    assert np.linalg.eigvalsh(A).min() > 1.0
    groups = [np.arange(5), np.arange(10, 30), np.array([], dtype=np.int64)]
    Xt, yt = X[:4], y[:4]
    eff = mlp.influence(
        model, X, y, groups, Xt, yt, damping=damping, curvature=kind, cg_tol=1e-10
    )
    for g, rows in enumerate(groups[:2]):
        gU = model.gradient(X[rows], y[rows]) - model.l2_reg * (
            model.layout.weight_mask() * model.params_
        )
        d = np.linalg.solve(A, gU)
        np.testing.assert_allclose(eff.params[g], d, rtol=1e-7, atol=1e-10)
        assert eff.self_loss[g] == pytest.approx(float(np.dot(gU, d)), abs=1e-9)
    assert eff.self_loss[2] == 0 and np.all(eff.params[2] == 0)
    assert np.all(eff.self_loss >= 0)
    assert eff.test_loss.shape == (3, 4)
    assert np.all(eff.solver_converged) and eff.solver_residual.max() <= 1e-10
    assert eff.damping == damping and eff.method == f"influence-{kind}"


def test_negative_curvature_is_detected_and_named(rng):
    # An untrained net without weight decay: its Hessian is indefinite.
    X = rng.standard_normal((30, 4))
    y = rng.integers(0, 3, 30)
    model = mlp.fit(X, y, hidden=(6,), l2_reg=0.0, epochs=0, polish_iter=0, seed=3)
    H = _dense(mlp.curvature(model, X, y), model.n_params)
    assert np.linalg.eigvalsh(H).min() < -0.1
    groups = [np.arange(k, k + 6) for k in range(0, 24, 6)]
    with pytest.raises(
        mlp.ConvergenceError, match="negative curvature.*damping.*gauss-newton"
    ):
        mlp.influence(model, X, y, groups, damping=0.0, check_data=False)
    # Damping past the most negative eigenvalue, or Gauss-Newton, solves it.
    lam = -np.linalg.eigvalsh(H).min()
    mlp.influence(model, X, y, groups, damping=lam + 1.0, check_data=False)
    mlp.influence(
        model, X, y, groups, damping=1e-3, curvature="gauss-newton", check_data=False
    )


def test_retrain_is_deterministic_and_independent_of_n_jobs(tiny):
    X, y, model = tiny
    groups = [np.arange(4), np.arange(20, 31)]
    sgd = mlp.SGDConfig(epochs=3, lr=0.1, batch_size=8)
    a = mlp.retrain(model, X, y, groups, X[:3], y[:3], seeds=[4, 9], sgd=sgd, n_jobs=1)
    b = mlp.retrain(model, X, y, groups, X[:3], y[:3], seeds=[4, 9], sgd=sgd, n_jobs=2)
    for name in (
        "params",
        "self_loss",
        "test_loss",
        "self_loss_seeds",
        "test_loss_seeds",
        "param_norm_seeds",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = mlp.retrain(model, X, y, groups, X[:3], y[:3], seeds=[4, 5], sgd=sgd, n_jobs=1)
    assert not np.array_equal(a.self_loss_seeds[:, 1], c.self_loss_seeds[:, 1])
    np.testing.assert_array_equal(a.self_loss_seeds[:, 0], c.self_loss_seeds[:, 0])
    assert a.test_loss_seeds.shape == (2, 2, 3) and np.all(a.converged)
    assert a.n_iter.tolist() == [3 * 5, 3 * 4]  # ceil(36/8), ceil(29/8) steps


def test_controlled_and_plain_definitions(tiny):
    X, y, model = tiny
    groups = [np.array([], dtype=np.int64), np.arange(6)]
    sgd = mlp.SGDConfig(epochs=4, lr=0.1, batch_size=10)
    kw = {"seeds": [0, 1, 2], "sgd": sgd, "n_jobs": 1}
    ctrl = mlp.retrain(model, X, y, groups, X[:2], y[:2], **kw)
    plain = mlp.retrain(model, X, y, groups, X[:2], y[:2], definition="plain", **kw)
    # Without a group the run is the control itself: exactly zero effect,
    # while the plain definition sees SGD's drift away from theta_0.
    assert np.all(ctrl.test_loss_seeds[0] == 0) and ctrl.self_loss[0] == 0
    assert np.all(ctrl.params[0] == 0)
    assert np.abs(plain.params[0]).max() > 0
    # plain - controlled = f(SGD(theta_0, data, r)) - f(theta_0), per seed.
    drift = plain.test_loss_seeds[0]
    np.testing.assert_allclose(
        plain.test_loss_seeds[1] - ctrl.test_loss_seeds[1], drift, atol=1e-12
    )
    np.testing.assert_allclose(
        plain.params[1] - ctrl.params[1], plain.params[0], atol=1e-12
    )


def test_influence_points_the_way_long_retraining_goes(digits_small):
    # Small data, many small-step epochs from a well-polished theta_0, and
    # damping matched to the run's horizon: the seed-averaged controlled
    # change of theta should point the way the damped influence predicts,
    # and rank the groups' self-loss effects alike. (Only direction and
    # ranks are asserted: SGD for a finite time is not the damped solve.)
    X, y = digits_small
    model = mlp.fit(X, y, hidden=(8,), l2_reg=1.0, epochs=60, polish_iter=500, seed=0)
    n = y.size
    rng = np.random.default_rng(0)
    groups = [
        np.sort(rng.choice(n, k, replace=False)) for k in (3, 5, 8, 12, 20, 30, 45, 60)
    ]
    sgd = mlp.SGDConfig(epochs=60, lr=0.05, batch_size=30)
    pred = mlp.influence(model, X, y, groups, X[:5], y[:5], damping=1.0 / sgd.horizon())
    act = mlp.retrain(
        model, X, y, groups, X[:5], y[:5], seeds=[0, 1], sgd=sgd, n_jobs=1
    )
    cos = np.einsum("gp,gp->g", pred.params, act.params) / (
        np.linalg.norm(pred.params, axis=1) * np.linalg.norm(act.params, axis=1)
    )
    assert np.median(cos) > 0.9
    assert spearmanr(pred.self_loss, act.self_loss)[0] > 0.8
    assert np.all(act.self_loss > 0)  # removing a group raises its own loss


def test_bad_inputs_are_named(tiny):
    X, y, model = tiny
    with pytest.raises(TypeError, match="model must be an MLPModel"):
        mlp.influence(object(), X, y, [np.arange(3)])
    with pytest.raises(ValueError, match="damping"):
        mlp.influence(model, X, y, [np.arange(3)], damping=-1.0)
    with pytest.raises(ValueError, match="curvature"):
        mlp.influence(model, X, y, [np.arange(3)], curvature="fisher")
    with pytest.raises(ValueError, match="cg_tol"):
        mlp.influence(model, X, y, [np.arange(3)], cg_tol=2.0)
    with pytest.raises(ValueError, match="X has 5 features"):
        mlp.influence(model, X[:, :5], y, [np.arange(3)])
    with pytest.raises(ValueError, match="out of range"):
        mlp.influence(model, X, y, [np.array([0, 99])])
    with pytest.raises(ValueError, match="y has label 7"):
        mlp.influence(model, X, np.where(y == 0, 7, y), [np.arange(3)])
    with pytest.raises(ValueError, match="both X_test and y_test"):
        mlp.influence(model, X, y, [np.arange(3)], X[:2])
    polished = mlp.fit(X, y, hidden=(5,), l2_reg=1.0, epochs=5, seed=0)
    with pytest.raises(ValueError, match="not the data the model"):
        mlp.influence(polished, X, y[::-1], [np.arange(3)], damping=5.0)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        mlp.retrain(model, X, y, [np.arange(3)], seeds=[1, 1])
    with pytest.raises(ValueError, match="definition"):
        mlp.retrain(model, X, y, [np.arange(3)], definition="both")
    with pytest.raises(ValueError, match="lr"):
        mlp.retrain(model, X, y, [np.arange(3)], sgd=mlp.SGDConfig(lr=-1.0))
    with pytest.raises(ValueError, match="hidden"):
        mlp.fit(X, y, hidden=(0,))
    with pytest.raises(ValueError, match="activation"):
        mlp.fit(X, y, activation="sigmoid")
    with pytest.raises(ValueError, match="single class"):
        mlp.fit(X, np.zeros_like(y))


def test_quick_study_end_to_end(tmp_path, capsys):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:, ::2] / 16.0  # 32 pixels: clustering needs no projection
    rng = np.random.default_rng(0)
    i = rng.permutation(y.size)
    path = tmp_path / "small.npz"
    np.savez(
        path, X=X[i[:150]], y=y[i[:150]], X_test=X[i[150:300]], y_test=y[i[150:300]]
    )
    out = tmp_path / "out"
    argv = [
        "experiment",
        "--model",
        "mlp",
        "--dataset",
        str(path),
        "--out",
        str(out),
        "--groups",
        "1",
        "--seeds",
        "3",
        "--hidden",
        "12,6",
        "--train-epochs",
        "20",
        "--epochs",
        "3",
        "--lr",
        "0.2",
        "--batch-size",
        "25",
        "--n-jobs",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Spearman rho" in printed and "spread" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = metrics["config"]
    assert cfg["n_groups"] == 7 and cfg["seeds"] == [0, 1, 2]
    assert cfg["damping"] == pytest.approx(25 / (0.2 * 3))
    for d in ("controlled", "plain"):
        rho = metrics["agreement"][d]["influence"]["test_loss[0]"]["all"]
        assert -1 <= rho["spearman"] <= 1
        assert "self_loss" in metrics["seed_spread"][d]
    for f in (
        "summary.txt",
        "groups.csv",
        "pred.npz",
        "actual_plain.npz",
        "actual_controlled.npz",
        "mlp_pred_vs_actual_controlled.png",
        "mlp_seed_spread.png",
        "theta0.npz",
    ):
        assert (out / f).exists(), f
    # A second run resumes from the saved theta_0 and retrains.
    mtime = os.path.getmtime(out / "runs" / "group000.npz")
    said = []
    again = mlp_study.run_mlp_experiment(
        str(path),
        str(out),
        seeds=3,
        per_type=1,
        hidden=(12, 6),
        train_epochs=20,
        sgd=mlp.SGDConfig(epochs=3, lr=0.2, batch_size=25),
        n_jobs=1,
        figures=False,
        say=said.append,
    )
    assert "theta_0 from" in said[1]
    assert "resuming: controls done, 7 of 7 groups done" in said
    assert os.path.getmtime(out / "runs" / "group000.npz") == mtime
    for d in ("controlled", "plain"):
        for q in ("self_loss", "test_loss[0]"):
            assert (
                again["agreement"][d]["influence"][q]["all"]["spearman"]
                == metrics["agreement"][d]["influence"][q]["all"]["spearman"]
            )


def test_cli_rejects_bad_mlp_options(tmp_path, capsys):
    base = ["experiment", "--model", "mlp", "--out", str(tmp_path / "o")]
    assert main(base + ["--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert main(base + ["--hidden", "12,x"]) == 2
    assert "--hidden" in capsys.readouterr().err
    assert main(base + ["--lr", "-1"]) == 2
    assert "--lr" in capsys.readouterr().err
