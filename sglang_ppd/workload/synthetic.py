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
    counts = turns.sample_tokens(rng, num)
    convs: list[Conversation] = []
    for i, count in enumerate(counts.tolist()):
        first = prompt.sample_tokens(rng, 1)
        later = user.sample_tokens(rng, count - 1)
        outs = output.sample_tokens(rng, count)
        users = np.concatenate((first, later)).tolist()
        convs.append((f"s{i}", tuple(Exchange(u, o) for u, o in zip(users, outs.tolist(), strict=True))))
    return convs
