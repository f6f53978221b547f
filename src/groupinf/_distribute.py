"""Refits fanned out over an executor: any `concurrent.futures.Executor`, or
a Dask distributed ``Client``.

The groups are split into batches (tasks); each task runs the ordinary local
`retrain` on its rows of the group matrix, so a group's numbers are computed
by exactly the same code wherever it runs. Results come back in group order
whatever order the tasks finish in.

- Dask: the model and the data are scattered to every worker once
  (``broadcast=True``) and each task receives only its slice of the group
  matrix. Tasks are submitted with ``retries``; when a worker dies, the
  scheduler re-runs the tasks it held on the surviving workers (and the data
  are still there, replicated). Nanny-started workers run BLAS on one thread
  by default, so a worker's threads are its cores.
- Other executors (threads or processes): each task carries the data (a
  process pool pickles them per task), so there are few, large tasks; a
  task that raises is re-submitted up to ``retries`` times before the error
  propagates.
"""

from __future__ import annotations

import numpy as np

from ._results import GroupEffects, Progress


def is_dask_client(executor):
    mod = type(executor).__module__ or ""
    return mod.startswith("distributed") and hasattr(executor, "scatter")


def _task(payload, C_rows, kwargs):
    # Runs on a worker: the local path on this batch of groups. Its
    # convergence warnings are raised once, by the caller, for all groups.
    import warnings

    from ._newton import ConvergenceWarning
    from ._retrain import retrain

    model, X, y, X_test, y_test = payload
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return retrain(model, X, y, C_rows, X_test, y_test, progress=False,
                       **kwargs)


def _batches(G, n_tasks):
    n_tasks = max(1, min(G, n_tasks))
    edges = np.linspace(0, G, n_tasks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run(executor, model, X, y, C, X_test, y_test, *, kwargs, batch_groups,
        retries, progress):
    """Refit every row of the (G, n) CSR matrix C on ``executor``."""
    G = C.shape[0]
    bar = Progress(G, "retrain", enabled=progress)
    payload = (model, X, y, X_test, y_test)
    if is_dask_client(executor):
        n_workers = max(1, len(executor.scheduler_info().get("workers", {})))
        size = batch_groups or max(1, -(-G // (4 * n_workers)))
        spans = _batches(G, -(-G // size))
        parts = _run_dask(executor, payload, C, spans, kwargs, retries, bar)
    else:
        workers = getattr(executor, "_max_workers", None) or 2
        size = batch_groups or max(1, -(-G // workers))
        spans = _batches(G, -(-G // size))
        parts = _run_futures(executor, payload, C, spans, kwargs, retries, bar)
    return concatenate(parts)


def _run_futures(executor, payload, C, spans, kwargs, retries, bar):
    from concurrent.futures import FIRST_COMPLETED, wait

    parts = [None] * len(spans)
    tries = [0] * len(spans)
    pending = {executor.submit(_task, payload, C[a:b], kwargs): j
               for j, (a, b) in enumerate(spans)}
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            j = pending.pop(fut)
            try:
                parts[j] = fut.result()
            except Exception:
                tries[j] += 1
                if tries[j] > retries:
                    for other in pending:
                        other.cancel()
                    raise
                a, b = spans[j]
                pending[executor.submit(_task, payload, C[a:b], kwargs)] = j
                continue
            bar.update(spans[j][1] - spans[j][0])
    return parts


def _run_dask(client, payload, C, spans, kwargs, retries, bar):
    from distributed import as_completed

    data = client.scatter(payload, broadcast=True, hash=False)
    futures = [client.submit(_task, data, C[a:b], kwargs, retries=retries,
                             pure=False) for a, b in spans]
    index = {f.key: j for j, f in enumerate(futures)}
    parts = [None] * len(spans)
    try:
        for fut in as_completed(futures):
            j = index[fut.key]
            parts[j] = fut.result()
            bar.update(spans[j][1] - spans[j][0])
    finally:
        client.cancel(futures)
        client.cancel(data)
    return parts


def concatenate(parts):
    """One GroupEffects from consecutive batches of groups."""
    fields = {}
    for name, value in vars(parts[0]).items():
        if isinstance(value, np.ndarray):
            fields[name] = np.concatenate([getattr(p, name) for p in parts])
        else:
            fields[name] = value
    fields["timings"] = {"tasks_total": float(sum(
        p.timings.get("total", 0.0) for p in parts))}
    return GroupEffects(**fields)
