"""Value distributions for synthetic workloads, written as short strings in a ``--workload`` spec.

Grammar (one value of a ``key=value`` pair)::

    5                 fixed value
    uniform:A:B       uniform on [A, B] (integers when drawing token counts)
    exp:MEAN          exponential with the given mean
    lognormal:MEDIAN:SIGMA   log-normal with the given median and log-space sigma
    geometric:MEAN    geometric on {1, 2, ...} with the given mean (e.g. turns per session)
    sharegpt          the empirical distribution of the shipped ShareGPT table (the column that
                      matches the key: prompt/user -> user tokens, output -> assistant tokens,
                      turns -> turns per conversation)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_ARITY = {"uniform": 2, "exp": 1, "lognormal": 2, "geometric": 1}


@dataclass(frozen=True, slots=True)
class Dist:
    kind: str
    """"fixed", "uniform", "exp", "lognormal", "geometric" or "empirical"."""
    params: tuple[float, ...] = ()
    values: tuple[int, ...] = ()
    """The sample for ``empirical``."""

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        p = self.params
        if self.kind == "fixed":
            return np.full(size, p[0], dtype=float)
        if self.kind == "uniform":
            return rng.uniform(p[0], p[1], size)
        if self.kind == "exp":
            return rng.exponential(p[0], size)
        if self.kind == "lognormal":
            return p[0] * np.exp(rng.normal(0.0, p[1], size))
        if self.kind == "geometric":
            return rng.geometric(1.0 / p[0], size).astype(float)
        return rng.choice(np.asarray(self.values, dtype=float), size)

    def sample_tokens(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Token counts: integers >= 1."""
        if self.kind == "uniform":
            lo, hi = int(round(self.params[0])), int(round(self.params[1]))
            return rng.integers(lo, hi + 1, size).clip(min=1)
        return np.maximum(np.rint(self.sample(rng, size)), 1).astype(np.int64)


def parse_dist(text: str, key: str, empirical: Callable[[], tuple[int, ...]] | None = None) -> Dist:
    """Parse one distribution string; ``empirical`` supplies the ``sharegpt`` sample for ``key``."""
    text = text.strip()
    if text == "sharegpt":
        if empirical is None:
            raise ValueError(f"{key}=sharegpt: no ShareGPT distribution is defined for {key!r}")
        return Dist("empirical", values=empirical())
    name, _, rest = text.partition(":")
    if not rest:
        return Dist("fixed", (_number(text, key),))
    if name not in _ARITY:
        raise ValueError(
            f"{key}={text}: unknown distribution {name!r}; use a number, "
            f"{', '.join(f'{k}:' + ':'.join(['X'] * n) for k, n in _ARITY.items())} or sharegpt"
        )
    parts = rest.split(":")
    if len(parts) != _ARITY[name]:
        raise ValueError(f"{key}={text}: {name} takes {_ARITY[name]} parameter(s), got {len(parts)}")
    params = tuple(_number(x, key) for x in parts)
    if name == "uniform" and params[0] > params[1]:
        raise ValueError(f"{key}={text}: uniform:A:B needs A <= B")
    if name == "geometric" and params[0] < 1:
        raise ValueError(f"{key}={text}: geometric mean must be >= 1")
    if name in ("exp", "lognormal") and params[0] <= 0:
        raise ValueError(f"{key}={text}: {name} needs a positive first parameter")
    return Dist(name, params)


def _number(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}={text}: expected a number or a distribution") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{key}={text}: expected a finite number >= 0")
    return value
