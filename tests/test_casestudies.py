"""Case studies: a feature dependence as a differentiable quantity, weak
supervision by labeling functions, credit to sources, and both CLI cases."""

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

import groupinf
from groupinf import sources as S
from groupinf.cli import main
from groupinf.datasets import load_adult
from groupinf.dependence import dependence, point_effects


@pytest.fixture(scope="module")
def binary(cancer):
    X, y = cancer
    return groupinf.fit(X[:400], y[:400], 1.0), X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="module")
def softmax(digits_small):
    X, y = digits_small
    return groupinf.fit(X[:220], y[:220], 1.0), X[:220], y[:220], X[220:], y[220:]


def _fd_gradient(dep, h=1e-4):
    # Fourth-order central differences along every coordinate.
    p = dep.params.size
    E = np.eye(p) * h
    th = dep.params
    return np.array([(-dep.evaluate(th + 2 * E[j]) + 8 * dep.evaluate(th + E[j])
                      - 8 * dep.evaluate(th - E[j]) + dep.evaluate(th - 2 * E[j]))
                     / (12 * h) for j in range(p)])


# ---------------------------------------------------------------------------
# The dependence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["permutation", "randomize"])
def test_dependence_value_is_the_direct_computation(binary, softmax, kind):
    model, _, _, Xt, yt = binary
    cols = [0, 3, 7]
    dep = dependence(model, Xt, yt, cols, kind=kind, seed=3, n_repeats=2)
    Xp = dep.X_perturbed
    assert Xp.shape == (2 * Xt.shape[0], Xt.shape[1])
    others = np.setdiff1d(np.arange(Xt.shape[1]), cols)
    np.testing.assert_array_equal(Xp[:, others], np.tile(Xt[:, others], (2, 1)))
    block = {tuple(r) for r in Xt[:, cols]}
    assert all(tuple(r) in block for r in Xp[:, cols])  # only values seen
    if kind == "permutation":  # each repeat keeps the block's rows exactly
        for r in range(2):
            part = Xp[r * len(yt):(r + 1) * len(yt), cols]
            np.testing.assert_array_equal(np.sort(part, axis=0),
                                          np.sort(Xt[:, cols], axis=0))
    direct = model.loss(Xp, np.tile(yt, 2)).mean() - model.loss(Xt, yt).mean()
    assert dep.value == pytest.approx(direct, rel=1e-12)

    pred = dependence(model, Xt, yt, cols, kind=kind, metric="prediction", seed=3)
    dp = model.predict_proba(pred.X_perturbed)[:, 1] - model.predict_proba(Xt)[:, 1]
    assert pred.value == pytest.approx(np.mean(dp ** 2), rel=1e-12)

    sm, _, _, Xs, ys = softmax
    dep = dependence(sm, Xs, ys, [2, 5], kind=kind, metric="prediction", seed=1)
    dP = sm.predict_proba(dep.X_perturbed) - sm.predict_proba(Xs)
    assert dep.value == pytest.approx(0.5 * np.mean(np.sum(dP ** 2, axis=1)),
                                      rel=1e-12)

    # Sparse test data give the same numbers.
    ms = groupinf.fit(sp.csr_matrix(binary[1]), binary[2], 1.0)
    a = dependence(ms, sp.csr_matrix(Xt), yt, cols, kind=kind, seed=3)
    b = dependence(model, Xt, yt, cols, kind=kind, seed=3)
    assert a.value == pytest.approx(b.value, rel=1e-9)
    np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("metric", ["loss", "prediction"])
@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_dependence_gradient_matches_finite_differences(binary, softmax, metric,
                                                        which):
    model, _, _, Xt, yt = binary if which == "binary" else softmax
    for kind in ("permutation", "randomize"):
        dep = dependence(model, Xt, yt, [1, 4], kind=kind, metric=metric,
                         seed=0, n_repeats=2)
        fd = _fd_gradient(dep)
        np.testing.assert_allclose(dep.gradient, fd, rtol=1e-6,
                                   atol=1e-8 * np.abs(fd).max())
        # And away from theta_hat.
        th = dep.params + 0.05 * np.random.default_rng(0).normal(
            size=dep.params.size)
        u = np.random.default_rng(1).normal(size=th.size)
        h = 1e-4
        d = (-dep.evaluate(th + 2 * h * u) + 8 * dep.evaluate(th + h * u)
             - 8 * dep.evaluate(th - h * u) + dep.evaluate(th - 2 * h * u)) / (12 * h)
        assert dep.gradient_at(th) @ u == pytest.approx(d, rel=1e-6, abs=1e-12)


def test_evaluate_many_and_change(binary):
    model, X, y, Xt, yt = binary
    dep = dependence(model, Xt, yt, 2)
    D = np.random.default_rng(0).normal(scale=0.01, size=(4, dep.params.size))
    many = dep.evaluate(dep.params + D)
    assert many.shape == (4,)
    for g in range(4):
        assert many[g] == pytest.approx(dep.evaluate(dep.params + D[g]), rel=1e-12)
    np.testing.assert_allclose(dep.change(D), many - dep.value)
    np.testing.assert_allclose(dep.change(D, linear=True), D @ dep.gradient)


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_point_effects_are_single_point_groups(binary, softmax, which):
    model, X, y, Xt, yt = binary if which == "binary" else softmax
    dep = dependence(model, Xt, yt, [0, 1])
    pe = point_effects(model, X, y, dep.gradient)
    eye = sp.identity(len(y), format="csr")
    ref = groupinf.influence(model, X, y, eye).params @ dep.gradient
    np.testing.assert_allclose(pe, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_fractional_weight_influence_approaches_retraining(cancer):
    # Weighted rows, a group removing a fraction eps of each member's weight:
    # first-order / actual -> 1 as eps -> 0, for the self-loss and for the
    # dependence alike, with an error shrinking about like eps.
    X, y = cancer
    w = np.random.default_rng(0).uniform(0.2, 2.0, size=len(y))
    model = groupinf.fit(X, y, 2.0, sample_weight=w)
    dep = dependence(model, X[:150], y[:150], [0, 2, 5])
    members = np.flatnonzero(y == 1)[:60]
    errs = []
    for eps in (0.3, 0.03, 0.003):
        C = sp.csr_matrix((np.full(members.size, eps),
                           (np.zeros(members.size, dtype=int), members)),
                          shape=(1, len(y)))
        pred = groupinf.influence(model, X, y, C)
        act = groupinf.retrain(model, X, y, C, n_jobs=1)
        assert act.group_weight[0] == pytest.approx(eps * w[members].sum())
        r_self = pred.self_loss[0] / act.self_loss[0]
        r_dep = (dep.change(pred.params, linear=True)[0]
                 / dep.change(act.params)[0])
        errs.append(max(abs(r_self - 1), abs(r_dep - 1)))
    assert errs[2] < 0.01
    assert errs[0] > errs[1] > errs[2]
    assert errs[1] < 0.2 * errs[0] and errs[2] < 0.2 * errs[1]


# ---------------------------------------------------------------------------
# Labeling functions and sources
# ---------------------------------------------------------------------------


MAILS = [
    S.Mail("Re: [ILUG] kernel patch", "John wrote:\n> it builds\nthanks",
           "linux.ie", "ilug.linux.ie"),
    S.Mail("FREE OFFER FOR YOU!!!", "Click here to claim $500 now. To be "
           "removed reply", "hotmail.com", "none"),
    S.Mail("lunch", "see you at noon", "example.org", "none"),
    S.Mail("Re: your order", "Your free trial of the python course",
           "yahoo.com", "none"),
]


def test_labeling_functions_on_handwritten_mails():
    lfs = S.SPAM_LABELING_FUNCTIONS
    names = [lf.name for lf in lfs]
    V = S.apply_labeling_functions(lfs, MAILS)
    got = [{names[j]: int(V[i, j]) for j in np.flatnonzero(V[i] != S.ABSTAIN)}
           for i in range(len(MAILS))]
    assert got[0] == {"mailing_list": S.HAM, "subject_reply": S.HAM,
                      "quoted_reply": S.HAM, "tech_words": S.HAM}
    assert got[1] == {"money_amount": S.SPAM, "free_offer": S.SPAM,
                      "click_here": S.SPAM, "remove_me": S.SPAM,
                      "subject_shouting": S.SPAM, "freemail_sender": S.SPAM}
    assert got[2] == {}  # every function abstains
    assert got[3] == {"free_offer": S.SPAM, "freemail_sender": S.SPAM,
                      "subject_reply": S.HAM, "tech_words": S.HAM}

    # One row per vote, weight 1 / (functions fired); message 2 has none.
    rows = S.weak_supervision_rows(V, merge=False)
    assert rows.message.tolist() == [0] * 4 + [1] * 6 + [3] * 4
    np.testing.assert_allclose(rows.weight, [1 / 4] * 4 + [1 / 6] * 6 + [1 / 4] * 4)
    assert rows.label.tolist() == [S.HAM] * 4 + [S.SPAM] * 6 + [
        V[3, j] for j in np.flatnonzero(V[3] != S.ABSTAIN)]
    np.testing.assert_array_equal(rows.sources.toarray().sum(axis=0), 1.0)

    # Merged: one row per (message, label) with the summed weight, and each
    # function's group removes exactly its own votes' weight.
    m = S.weak_supervision_rows(V)
    assert list(zip(m.message, m.label)) == [(0, 0), (1, 1), (3, 0), (3, 1)]
    np.testing.assert_allclose(m.weight, [1, 1, 0.5, 0.5])
    np.testing.assert_allclose(m.sources.multiply(m.weight).sum(axis=1),
                               rows.sources.multiply(rows.weight).sum(axis=1))
    assert m.sources[names.index("free_offer"), 3] == pytest.approx(0.5)

    with pytest.raises(ValueError, match="names must be unique"):
        S.apply_labeling_functions([lfs[0], lfs[0]], MAILS)
    with pytest.raises(ValueError, match="lfs is empty"):
        S.apply_labeling_functions([], MAILS)


def test_mail_from_text_splits_subject_and_body():
    m = S.Mail.from_text("Re: hello\n\nbody line\n\nmore", "a.org", "l@x")
    assert (m.subject, m.body, m.sender_domain, m.mailing_list) == (
        "Re: hello", "body line\n\nmore", "a.org", "l@x")


def test_coverage_and_precision_arithmetic():
    V = np.array([[1, -1, 0], [1, 0, -1], [-1, 0, -1], [0, -1, -1]])
    gold = np.array([1, 0, 0, 0])
    cov, prec, n = S.coverage_precision(V, gold)
    np.testing.assert_allclose(cov, [0.75, 0.5, 0.25])
    np.testing.assert_allclose(prec, [2 / 3, 1.0, 0.0])
    assert n.tolist() == [3, 2, 1]
    cov, prec, _ = S.coverage_precision(np.full((3, 1), -1), np.zeros(3))
    assert cov[0] == 0 and np.isnan(prec[0])
    with pytest.raises(ValueError, match="gold has shape"):
        S.coverage_precision(V, gold[:2])


def test_merged_and_expanded_weak_rows_give_the_same_effects(cancer):
    # The same training objective stored two ways: identical groups' effects.
    X, y = cancer
    X, gold = X[:200], y[:200]
    rng = np.random.default_rng(5)
    agree = rng.random((200, 4)) < np.array([0.9, 0.8, 0.7, 0.95])
    fires = rng.random((200, 4)) < 0.6
    votes = np.where(fires, np.where(agree, gold[:, None], 1 - gold[:, None]), -1)
    out = {}
    for merge in (False, True):
        r = S.weak_supervision_rows(votes, merge=merge)
        Xr = X[r.message]
        model = groupinf.fit(Xr, r.label, 1.0, sample_weight=r.weight)
        pred = groupinf.influence(model, Xr, r.label, r.sources, X[:5], gold[:5])
        act = groupinf.retrain(model, Xr, r.label, r.sources, X[:5], gold[:5],
                               n_jobs=1)
        out[merge] = (model.params_, pred, act)
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-9, atol=1e-12)
    for k in (1, 2):
        np.testing.assert_allclose(out[True][k].params, out[False][k].params,
                                   rtol=1e-7, atol=1e-11)
        np.testing.assert_allclose(out[True][k].test_loss, out[False][k].test_loss,
                                   rtol=1e-7, atol=1e-11)
        np.testing.assert_allclose(out[True][k].self_loss, out[False][k].self_loss,
                                   rtol=1e-7, atol=1e-11)


def test_column_sources_and_effect_quantities(binary):
    values = np.array(["b", "a", "b", "c", "b", "a"])
    groups, names, left = S.column_sources(values, min_size=2)
    assert names == ["b", "a"] and left == 1
    assert [g.tolist() for g in groups] == [[0, 2, 4], [1, 5]]
    assert S.column_sources(values, max_sources=1)[1] == ["b"]

    model, X, y, Xt, yt = binary
    eff = groupinf.influence(model, X, y, [np.arange(10), np.arange(10, 40)],
                             Xt, yt)
    q = S.effect_quantities(eff, yt, ["neg", "pos"])
    assert list(q) == ["test_loss", "test_loss[neg]", "test_loss[pos]",
                       "self_loss"]
    np.testing.assert_allclose(q["test_loss[pos]"],
                               eff.test_loss[:, yt == 1].mean(axis=1))
    np.testing.assert_allclose(q["test_loss"], eff.test_loss.mean(axis=1))


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_dependence_bad_input_names_the_argument(binary):
    model, _, _, Xt, yt = binary
    names = [f"f{j}" for j in range(Xt.shape[1])]
    names[3:5] = ["sex=Female", "sex=Male"]
    dep = dependence(model, Xt, yt, "sex", feature_names=names)
    assert dep.columns.tolist() == [3, 4] and dep.feature == "sex"
    assert dependence(model, Xt, yt, "f7", feature_names=names).columns.tolist() == [7]
    with pytest.raises(ValueError, match=r"feature 'sexx' is neither"):
        dependence(model, Xt, yt, "sexx", feature_names=names)
    with pytest.raises(ValueError, match=r"feature 'sex' is a name, but no "
                                         r"feature_names"):
        dependence(model, Xt, yt, "sex")
    with pytest.raises(ValueError, match=r"feature index 30 is out of range "
                                         r"for 30 features"):
        dependence(model, Xt, yt, 30)
    with pytest.raises(ValueError, match=r"feature index -1 is out of range"):
        dependence(model, Xt, yt, [0, -1])
    with pytest.raises(TypeError, match=r"feature"):
        dependence(model, Xt, yt, 1.5)
    with pytest.raises(ValueError, match=r"kind must be one of .*'permute'"):
        dependence(model, Xt, yt, 0, kind="permute")
    with pytest.raises(ValueError, match=r"metric must be one of .*'losss'"):
        dependence(model, Xt, yt, 0, metric="losss")
    with pytest.raises(ValueError, match=r"n_repeats must be >= 1"):
        dependence(model, Xt, yt, 0, n_repeats=0)
    with pytest.raises(ValueError, match=r"feature_names has 2 names"):
        dependence(model, Xt, yt, "sex", feature_names=["a", "b"])
    with pytest.raises(ValueError, match=r"^X_test"):
        dependence(model, Xt[:, :5], yt, 0)
    with pytest.raises(ValueError, match=r"params must have shape"):
        dep.evaluate(np.zeros(3))
    with pytest.raises(ValueError, match=r"gradient must have shape"):
        point_effects(model, binary[1], binary[2], np.zeros(3))


# ---------------------------------------------------------------------------
# The command line, end to end on real data
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adult_subset(tmp_path_factory):
    """1,500 training and 600 test rows of the embedded Adult data as .npz."""
    data = load_adult()
    rng = np.random.default_rng(0)
    tr = np.sort(rng.choice(data.X_train.shape[0], 1500, replace=False))
    te = np.sort(rng.choice(data.X_test.shape[0], 600, replace=False))
    path = tmp_path_factory.mktemp("adult") / "adult-small.npz"
    arrays = {"X": data.X_train[tr], "y": data.y_train[tr],
              "X_test": data.X_test[te], "y_test": data.y_test[te],
              "feature_names": np.array(data.feature_names)}
    for k in ("sex", "race", "relationship", "age_band"):
        arrays[f"groups_train.{k}"] = data.groups_train[k][tr]
        arrays[f"groups_test.{k}"] = data.groups_test[k][te]
    np.savez(path, **arrays)
    return str(path)


def _json(path):
    with open(path) as fh:
        return json.loads(fh.read(), parse_constant=lambda c: pytest.fail(c))


def test_cli_dependence_end_to_end(adult_subset, tmp_path, capsys):
    out = str(tmp_path / "dep")
    args = ["experiment", "--case", "dependence", "--dataset", adult_subset,
            "--feature", "sex", "--l2", "1.5", "--groups", "8", "--out", out,
            "--no-progress"]
    assert main(args) == 0
    for f in ("groups.csv", "points.csv", "metrics.json", "summary.txt",
              "point_effects.npz", "dependence.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0
    m = _json(os.path.join(out, "metrics.json"))
    assert m["dependence"]["columns"] == ["sex=Female", "sex=Male"]
    assert m["refits_converged"]
    assert m["agreement"]["first-order"]["all"]["spearman"] > 0.6
    assert m["agreement"]["newton+plugin"]["all"]["spearman"] > 0.8
    with open(os.path.join(out, "groups.csv")) as fh:
        rows = fh.read().splitlines()
    first = [float(r.split(",")[4]) for r in rows[1:]]
    assert first == sorted(first)  # ranked, most responsible first
    assert any(",sex=Female," in r for r in rows)
    text = capsys.readouterr().out
    assert "most responsible" in text and "Spearman" in text

    # Re-running reuses the saved refits.
    assert main(args) == 0
    assert "refits loaded" in capsys.readouterr().out


def test_cli_sources_by_column(adult_subset, tmp_path):
    out = str(tmp_path / "src")
    assert main(["experiment", "--case", "sources", "--dataset", adult_subset,
                 "--source-column", "race", "--l2", "1.5", "--out", out,
                 "--no-progress"]) == 0
    m = _json(os.path.join(out, "metrics.json"))
    names = [r["source"] for r in m["sources"]]
    assert "White" in names and m["refits_converged"]
    cov = {r["source"]: r["coverage"] for r in m["sources"]}
    assert cov["White"] == pytest.approx(np.mean(np.load(adult_subset)[
        "groups_train.race"] == "White"))
    for f in ("sources.csv", "effect_vs_coverage.png", "effect_vs_agreement.png",
              "pred_vs_actual.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0


def test_cli_sources_labeling_functions_on_spamassassin(tmp_path):
    out = str(tmp_path / "lf")
    assert main(["experiment", "--case", "sources", "--dataset", "spam",
                 "--max-features", "150", "--l2", "5", "--out", out,
                 "--no-progress"]) == 0
    m = _json(os.path.join(out, "metrics.json"))
    assert m["refits_converged"] and m["config"]["mode"] == "labeling-functions"
    rows = {r["source"]: r for r in m["sources"]}
    assert set(rows) <= {lf.name for lf in S.SPAM_LABELING_FUNCTIONS}
    assert len(rows) >= 8
    for r in rows.values():
        assert 0 < r["coverage"] <= 1 and 0 <= r["precision"] <= 1
        assert r["actual:self_loss"] > 0  # a source fits its own votes
    assert m["agreement"]["first-order"]["test_loss"]["n"] == len(rows)
    for f in ("sources.csv", "effect_vs_coverage.png", "effect_vs_precision.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0


@pytest.mark.parametrize("argv, message", [
    (["--case", "dependence", "--feature", "sexx"], "feature 'sexx'"),
    (["--case", "dependence", "--feature", "500"], "feature index 500"),
    (["--case", "dependence"], "--case dependence needs --feature"),
    (["--feature", "sex"], "--feature needs --case dependence"),
    (["--case", "sources", "--source-column", "nope"], "--source-column 'nope'"),
    (["--case", "sources"], "labeling functions need message texts"),
    (["--case", "sources", "--feature", "sex"], "--feature is for --case"),
])
def test_cli_case_bad_arguments(adult_subset, tmp_path, capsys, argv, message):
    code = main(["experiment", "--dataset", adult_subset, "--l2", "1.5",
                 "--out", str(tmp_path / "x"), "--no-progress"] + argv)
    assert code == 2
    assert message in capsys.readouterr().err
