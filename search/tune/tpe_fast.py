"""Optuna's TPE without its per-element Python loop, so that a proposal stays cheap as a study
reaches hundreds or thousands of finished trials (measured by `python -m search.bench scale`).

Optuna 5 computes the normal log-CDF that every integer or discretised parameter's Parzen
estimator needs (past trials x candidates, each proposal) one element at a time in Python
(`np.frompyfunc` over a scalar function behind a 1,000-entry cache that a large study thrashes).
SciPy's `log_ndtr` is the same function, vectorised and at least as accurate (they agree to
6e-8 relative across -60..10); here it is ~25x faster, and a proposal over 1,000 finished trials
took 36 ms instead of 108 (in memory, fashion_space's space). SciPy comes with MLflow; without
it, or with an Optuna whose internals moved, nothing changes."""

from __future__ import annotations

import numpy as np

_done = False


def use_vectorised_log_ndtr() -> bool:
    """Swap in SciPy's log_ndtr for Optuna's, once per process; True when it is in use."""
    global _done
    if _done:
        return True
    try:
        from optuna.samplers._tpe import _truncnorm
        from scipy.special import log_ndtr
    except ImportError:
        return False
    if not callable(getattr(_truncnorm, "_log_ndtr", None)):
        return False

    def vectorised(a) -> np.ndarray:
        return log_ndtr(np.asarray(a, dtype=float))

    _truncnorm._log_ndtr = vectorised
    _done = True
    return True
