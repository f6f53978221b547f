"""retrain(executor=...): thread and process pools, and a real Dask
LocalCluster (2 worker processes), including a worker killed mid-run."""

import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import groupinf

# The contract: 1e-12 relative (to each array's largest entry) however the
# work is split. Workers run BLAS on one thread, this process on all cores,
# so products may differ in the last bits. Certificates (gradient norms at
# round-off) are compared as certificates.
FIELDS = ("params", "test_loss", "test_margin", "self_loss", "self_margin",
          "grad_tol", "group_weight")


def _problem(n=600, d=20, n_groups=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(int)
    m = groupinf.fit(X, y, l2_reg=1.0)
    sizes = rng.integers(1, n // 10, size=n_groups)
    groups = [rng.choice(n, size=k, replace=False) for k in sizes]
    groups[3] = []  # an empty group travels too
    return X, y, m, groups


@pytest.fixture(scope="module")
def problem():
    return _problem()


def _same(a, b):
    for name in FIELDS:
        u, v = getattr(a, name), getattr(b, name)
        assert (u is None) == (v is None), name
        if u is not None:
            scale = max(float(np.max(np.abs(v))), 1e-300)
            assert float(np.max(np.abs(u - v))) <= 1e-12 * scale, name
    np.testing.assert_array_equal(a.converged, b.converged)
    assert np.all(a.grad_norm[a.converged] <= a.grad_tol[a.converged])


def test_thread_and_process_pools_give_the_local_results(problem):
    X, y, m, groups = problem
    base = groupinf.retrain(m, X, y, groups, X[:5], y[:5])
    with ThreadPoolExecutor(2) as ex:
        _same(groupinf.retrain(m, X, y, groups, X[:5], y[:5], executor=ex),
              base)
    with ProcessPoolExecutor(2) as ex:
        _same(groupinf.retrain(m, X, y, groups, X[:5], y[:5], executor=ex,
                               batch_groups=7), base)


def test_softmax_sparse_on_a_pool(digits_small):
    import scipy.sparse as sp

    X, y = digits_small
    Xs = sp.csr_matrix(X)
    m = groupinf.fit(Xs, y, l2_reg=1.0)
    groups = [np.arange(k, k + 9) for k in range(0, 60, 9)]
    base = groupinf.retrain(m, Xs, y, groups)
    with ThreadPoolExecutor(2) as ex:
        _same(groupinf.retrain(m, Xs, y, groups, executor=ex, batch_groups=2),
              base)


class _Flaky:
    """An executor whose first ``fail`` tasks raise, then behaves."""

    def __init__(self, fail):
        self.fail, self.calls = fail, 0

    def submit(self, fn, *args):
        self.calls += 1
        fut = Future()
        if self.calls <= self.fail:
            fut.set_exception(OSError("worker lost"))
        else:
            fut.set_result(fn(*args))
        return fut


def test_failed_tasks_are_rerun_then_the_error_propagates(problem):
    X, y, m, groups = problem
    base = groupinf.retrain(m, X, y, groups)
    ex = _Flaky(fail=2)
    _same(groupinf.retrain(m, X, y, groups, executor=ex, batch_groups=10,
                           retries=2), base)
    assert ex.calls == 3 + 2
    with pytest.raises(OSError, match="worker lost"):
        groupinf.retrain(m, X, y, groups, executor=_Flaky(fail=10),
                         batch_groups=30, retries=2)


def test_executor_arguments_are_checked(problem):
    X, y, m, groups = problem
    with pytest.raises(TypeError, match="executor must be a concurrent"):
        groupinf.retrain(m, X, y, groups, executor="localhost:8786")
    with ThreadPoolExecutor(1) as ex:
        with pytest.raises(ValueError, match="batch_groups must be >= 1"):
            groupinf.retrain(m, X, y, groups, executor=ex, batch_groups=0)
        with pytest.raises(ValueError, match="retries must be >= 0"):
            groupinf.retrain(m, X, y, groups, executor=ex, retries=-1)
        with pytest.raises(ValueError, match="at least one group"):
            groupinf.retrain(m, X, y, [], executor=ex)


def test_unconverged_refits_on_an_executor_are_flagged_once(problem):
    X, y, m, groups = problem
    with ThreadPoolExecutor(2) as ex:
        with pytest.warns(groupinf.ConvergenceWarning) as record:
            r = groupinf.retrain(m, X, y, groups, executor=ex, max_iter=1)
    assert len([w for w in record
                if issubclass(w.category, groupinf.ConvergenceWarning)]) == 1
    assert not r.converged.all()


# ---------------------------------------------------------------------------
# A real Dask cluster
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_gives_the_local_results(dask_client, problem):
    X, y, m, groups = problem
    base = groupinf.retrain(m, X, y, groups, X[:5], y[:5])
    _same(groupinf.retrain(m, X, y, groups, X[:5], y[:5],
                           executor=dask_client), base)
    _same(groupinf.retrain(m, X, y, groups, X[:5], y[:5],
                           executor=dask_client, batch_groups=1), base)


def test_dask_survives_a_worker_killed_mid_run(dask_client):
    # Refits slow enough (n = 20,000) that tasks are in flight when one
    # worker process is killed; its tasks must be re-run elsewhere and the
    # results must still be the local ones.
    X, y, m, groups = _problem(n=20_000, d=40, n_groups=16, seed=1)
    base = groupinf.retrain(m, X, y, groups)
    pids = dask_client.run(os.getpid)
    killed = {}

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline:
            busy = [w for w, keys in dask_client.processing().items()
                    if keys and w in pids]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed["worker"] = busy[0]
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    out = groupinf.retrain(m, X, y, groups, executor=dask_client,
                           batch_groups=1, retries=3)
    t.join()
    assert "worker" in killed, "no task was ever seen running"
    _same(out, base)
    # The nanny restarted the killed worker: a new process answers.
    dask_client.wait_for_workers(2, timeout=60)
    assert set(dask_client.run(os.getpid).values()) != set(pids.values())


def test_cli_experiment_on_a_local_dask_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    from groupinf import cli

    out = tmp_path / "study"
    code = cli.main(["experiment", "--dataset", "counterexample-curvature",
                     "--out", str(out), "--groups", "3", "--no-plugin",
                     "--dask-scheduler", "--n-jobs", "2", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "dask: local cluster with 2 workers" in text
    assert "all converged = True" in text
    assert (out / "metrics.json").exists()


def test_cli_unreachable_scheduler_is_a_clear_error(tmp_path, capsys,
                                                    monkeypatch):
    distributed = pytest.importorskip("distributed")
    from groupinf import cli

    def refuse(address, timeout):
        raise OSError("Timed out trying to connect")

    monkeypatch.setattr(distributed, "Client", refuse)
    code = cli.main(["experiment", "--dataset", "counterexample-curvature",
                     "--out", str(tmp_path / "x"), "--groups", "3",
                     "--dask-scheduler", "tcp://127.0.0.1:9", "--no-progress"])
    assert code == 2
    assert "--dask-scheduler: cannot reach tcp://127.0.0.1:9" in \
        capsys.readouterr().err


def test_retrain_options_that_do_nothing_are_refused(problem):
    X, y, m, groups = problem
    with pytest.raises(ValueError, match="batch_groups applies only with an "
                                         "executor"):
        groupinf.retrain(m, X, y, groups, batch_groups=4)
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        groupinf.retrain(m, X, y, groups, progress=3)
