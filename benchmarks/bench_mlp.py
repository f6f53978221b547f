"""MLP benchmarks (issue 5), every timing in one process on the same inputs.

1. One exact Hessian-vector product (R-operator) against one full-batch
   gradient of F on the 10 % MNIST training set (800 x 784, MLP 784-128-32-10,
   104,938 parameters): the HVP with the network's state at theta_0 cached
   (what CG pays per iteration), the HVP including that state (a forward and
   a backward pass), the per-direction cost of a batch of 32 directions, and
   the Gauss-Newton product. Target: HVP <= 3x gradient.
2. Retraining throughput: SGD runs from theta_0 per second with the study's
   settings (20 epochs, lr 0.5, batches of 50), in one process and with the
   study's two worker processes.

Medians of repeated runs after a warm-up. BLAS is limited to one thread per
process (as in the study); ``--threads 2`` repeats part 1 with two.

Run:  PYTHONPATH=src python benchmarks/bench_mlp.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _timing import timeit as _timeit

from groupinf import mlp
from groupinf.datasets import load_dataset


def timeit(fn, repeat=7, warmup=1):
    return _timeit(fn, repeat, warmup)


def bench_hvp(model, X, y, repeat):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((1, model.n_params))
    V32 = rng.standard_normal((32, model.n_params))
    t_grad = timeit(lambda: model.gradient(X, y), repeat)
    curv = mlp.curvature(model, X, y)
    gn = mlp.curvature(model, X, y, kind="gauss-newton")
    t_hvp = timeit(lambda: curv.matvec(v), repeat)
    t_full = timeit(lambda: mlp.curvature(model, X, y).matvec(v), repeat)
    t_32 = timeit(lambda: curv.matvec(V32), max(3, repeat // 2)) / 32
    t_gn = timeit(lambda: gn.matvec(v), repeat)

    # The same product by central differences of two gradients, as a check
    # of the R-operator's values (not of its speed).
    eps = 1e-5
    fd = (
        model.gradient(X, y, model.params_ + eps * v[0])
        - model.gradient(X, y, model.params_ - eps * v[0])
    ) / (2 * eps)
    rel = np.linalg.norm(curv.matvec(v)[0] - fd) / np.linalg.norm(fd)
    print(f"[hvp] full-batch gradient            {t_grad * 1e3:8.2f} ms")
    print(
        f"[hvp] HVP, state at theta_0 cached   {t_hvp * 1e3:8.2f} ms   "
        f"ratio HVP / gradient = {t_hvp / t_grad:.2f}   (target <= 3)"
    )
    print(
        f"[hvp] HVP including the state        {t_full * 1e3:8.2f} ms   "
        f"ratio = {t_full / t_grad:.2f}"
    )
    print(
        f"[hvp] HVP in a batch of 32, per dir  {t_32 * 1e3:8.2f} ms   "
        f"ratio = {t_32 / t_grad:.2f}"
    )
    print(
        f"[hvp] Gauss-Newton product, cached   {t_gn * 1e3:8.2f} ms   "
        f"ratio = {t_gn / t_grad:.2f}"
    )
    print(f"[hvp] R-operator vs central differences: relative difference {rel:.1e}")
    return t_hvp / t_grad


def bench_retrain(model, X, y, n_runs, n_groups):
    sgd = mlp.SGDConfig(epochs=20, lr=0.5, batch_size=50)
    yc = np.searchsorted(model.classes_, y)
    runner = mlp._Runner(model, X, yc, None, None, sgd)
    w = np.ones(X.shape[0])
    t = timeit(lambda: runner.run(w, 0), repeat=n_runs, warmup=1)
    steps = sgd.epochs * int(np.ceil(X.shape[0] / sgd.batch_size))
    print(
        f"[retrain] one process: {1 / t:6.2f} runs/s ({t * 1e3:.0f} ms per "
        f"run of {steps} SGD steps, {t / steps * 1e3:.2f} ms per step)"
    )

    rng = np.random.default_rng(0)
    groups = [
        np.sort(rng.choice(X.shape[0], 20, replace=False)) for _ in range(n_groups)
    ]
    seeds = list(range(4))
    t0 = time.perf_counter()
    mlp.sgd_runs(
        model,
        X,
        y,
        groups,
        seeds=seeds,
        sgd=sgd,
        n_jobs=2,
        progress=False,
        controlled=True,
    )
    el = time.perf_counter() - t0
    runs = len(seeds) * (len(groups) + 1)
    print(
        f"[retrain] two processes: {runs / el:6.2f} runs/s ({runs} runs, "
        f"controls included, {el:.1f} s with pool start-up)"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = load_dataset("mnist-10")
    X, y = data.X_train, data.y_train
    with mlp._limit_blas_threads(1):
        model = mlp.fit(
            X, y, hidden=(128, 32), l2_reg=1.0, epochs=10, polish_iter=0, seed=0
        )
    print(
        f"MNIST 10 %: n = {X.shape[0]}, d = {X.shape[1]}, MLP {model.sizes}, "
        f"{model.n_params} parameters; BLAS threads = {args.threads}"
    )
    repeat = 3 if args.quick else 9
    with mlp._limit_blas_threads(args.threads):
        bench_hvp(model, X, y, repeat)
    with mlp._limit_blas_threads(1):
        bench_retrain(model, X, y, 3 if args.quick else 7, 6 if args.quick else 16)


if __name__ == "__main__":
    main()
