"""Synthetic multi-turn conversations: turns and token lengths drawn from :class:`Dist`\\ s."""

from __future__ import annotations

import numpy as np

from sglang_ppd.workload.dists import Dist
from sglang_ppd.workload.sessions import Exchange
from sglang_ppd.workload.sharegpt import Conversation


def synthetic_conversations(
    num: int, *, turns: Dist, prompt: Dist, user: Dist, output: Dist, seed: int
) -> list[Conversation]:
    """``num`` conversations ``s0, s1, ...``: the first user message from ``prompt``, later ones
    from ``user``, every reply from ``output``, and the number of turns from ``turns`` (>= 1)."""
    rng = np.random.default_rng([seed, 3])
    # One draw per distribution for the whole workload: per-session draws cost O(sessions) calls.
    counts = turns.sample_tokens(rng, num)
    total = int(counts.sum())
    firsts = prompt.sample_tokens(rng, num).tolist()
    laters = user.sample_tokens(rng, total - num).tolist()
    outs = output.sample_tokens(rng, total).tolist()
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
    convs: list[Conversation] = []
    for i, (count, start) in enumerate(zip(counts.tolist(), starts, strict=True)):
        users = [firsts[i], *laters[start - i : start - i + count - 1]]
        convs.append(
            (f"s{i}", tuple(Exchange(u, o) for u, o in zip(users, outs[start : start + count], strict=True)))
        )
    return convs
