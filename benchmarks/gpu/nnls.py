"""Non-negative least squares for the few coefficients of a step model, with numpy alone.

The optimum of min ||Ax - b|| subject to x >= 0 is the unconstrained least-squares solution on its
own support, so for a handful of columns it is found by trying every support.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def nnls(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    n = a.shape[1]
    if n > 10:
        raise ValueError("nnls here enumerates supports; use it for at most 10 coefficients")
    best, best_res = np.zeros(n), float(np.linalg.norm(b))
    for k in range(1, n + 1):
        for cols in combinations(range(n), k):
            sub = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
            if np.all(sub >= 0):
                x = np.zeros(n)
                x[list(cols)] = sub
                res = float(np.linalg.norm(a @ x - b))
                if res < best_res:
                    best, best_res = x, res
    return best, best_res
