"""Session arrival processes: Poisson (CV 1) or bursty renewal processes with Gamma gaps of a given CV."""

from __future__ import annotations

import numpy as np


def arrival_times_s(rng: np.random.Generator, num: int, rate_per_s: float, cv: float = 1.0) -> np.ndarray:
    """``num`` arrival times starting at 0, mean rate ``rate_per_s``, inter-arrival CV ``cv``.

    Gamma gaps with shape 1/cv² have exactly that CV and mean 1/rate; shape 1 is the exponential
    (Poisson). CV > 1 gives clustered bursts, CV < 1 a more regular stream.
    """
    if num < 0:
        raise ValueError(f"number of arrivals must be >= 0, got {num}")
    if not rate_per_s > 0:
        raise ValueError(f"arrival rate must be > 0 per second, got {rate_per_s}")
    if not cv > 0:
        raise ValueError(f"arrival CV must be > 0, got {cv}")
    if num == 0:
        return np.zeros(0)
    shape = 1.0 / cv**2
    gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), num - 1)
    return np.concatenate(([0.0], np.cumsum(gaps)))
