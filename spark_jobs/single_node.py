"""Single-node solvers used inside the training job when the interaction matrix fits in memory.

* EASE (Steck 2019): closed-form item-item model, B = I − P·diag(1/diag(P)) with
  P = (XᵀX + λI)⁻¹. Best ranking quality on the Amazon 5-core files, but needs n_items² memory,
  so it is only chosen below ``EASE_MAX_ITEMS``.
* iALS from the ``implicit`` library (conjugate gradient, multi-threaded C++): item and user
  factors for any catalog size that fits in RAM, much faster than Spark MLlib on one machine.
"""
from __future__ import annotations


import numpy as np
import scipy.sparse as sp

from core.env import env_int

EASE_MAX_ITEMS = env_int("EASE_MAX_ITEMS", 20_000)


def ease_weights(train: sp.csr_matrix, lam: float) -> np.ndarray:
    """The EASE weight matrix B (float32, zero diagonal) for binary interactions."""
    x = (train > 0).astype(np.float64)
    gram = np.asarray((x.T @ x).todense())
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def ials_factors(train: sp.csr_matrix, factors: int, reg: float, alpha: float, iterations: int,
                 seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(user_factors, item_factors) of implicit's ALS on binary interactions with confidence alpha."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    binary = train.dtype == np.float32 and train.has_sorted_indices and bool((train.data == 1).all())
    # implicit threads over users itself; a multi-threaded BLAS under it oversubscribes the cores
    # (implicit warns about it), so BLAS gets one thread during the fit
    with threadpool_limits(1, user_api="blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha, iterations=iterations,
                                        random_state=seed, calculate_training_loss=False)
        model.fit(train if binary else (train > 0).astype(np.float32).tocsr(), show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)
