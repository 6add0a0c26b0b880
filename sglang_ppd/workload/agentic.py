"""Agentic tool-loop sessions: ``--workload agentic:...``.

One session is one agent task: a task message, then tens of turns in which the model replies with a
short tool call and the tool's output is appended to the context before the next turn, sent at once
or after a sub-second tool run. Every session starts with the same large tool-schema system prompt.
Sessions arrive as a Poisson (``cv=1``) or Gamma process; each session is a closed loop (a turn is
sent when the previous reply and its tool run are done), as ShareGPT sessions are.

The defaults, and where each comes from (an assumption where no public number was found):

- ``turns=lognormal:20:0.7`` (median 20, p90 about 50): the issue's "tens of turns"; TraceLab's
  public pool of real Claude Code and Codex sessions (tracelab.cs.washington.edu,
  "session_internal_counts") has 15 tool-initiated steps per session at the median and 73.6 on
  average, 7.8 per user request on average.
- ``tool_output=lognormal:800:1.0`` clipped to ``[tool_min, tool_max] = [100, 8000]`` tokens: the
  issue's range of tool outputs; a median of 800 (a file excerpt, a test log) is an assumption.
- ``output=lognormal:200:1.0``: agent turns are short (a tool call, a line of reasoning); TraceLab's
  pool averages 523 output tokens per step (186.9 M over 357,161 steps, reasoning tokens included).
- ``task=lognormal:400:0.8``: the user's task message (assumption).
- ``system=12000``: a coding agent's system prompt with tool JSON schemas (about 20 tools of a few
  hundred tokens each, plus instructions); an assumption, shared by every session.
- ``think_s=uniform:0:1``: the tool run between a reply and the next turn, zero to sub-second (the
  issue's range: local, fast tools such as file reads and searches; slow tools are not modelled).
- ``n=300, rate=0.5``: sessions and their arrival rate per second (times ``--rate-scale``).
- ``max_context=131072``: a session ends before a turn that would not fit the model's context. With
  the defaults the median prompt is about 32k tokens and the p90 about 72k
  (``python -m sglang_ppd.workload --workload agentic:``).
"""

from __future__ import annotations

import numpy as np

from sglang_ppd.workload.dists import Dist
from sglang_ppd.workload.sessions import Exchange
from sglang_ppd.workload.sharegpt import Conversation

DEFAULTS = {
    "n": "300",
    "rate": "0.5",
    "cv": "1.0",
    "turns": "lognormal:20:0.7",
    "task": "lognormal:400:0.8",
    "tool_output": "lognormal:800:1.0",
    "tool_min": "100",
    "tool_max": "8000",
    "output": "lognormal:200:1.0",
    "system": "12000",
    "think_s": "uniform:0:1",
    "max_context": "131072",
}


def agentic_conversations(
    num: int,
    *,
    turns: Dist,
    task: Dist,
    tool_output: Dist,
    tool_range: tuple[int, int],
    output: Dist,
    seed: int,
) -> list[Conversation]:
    """``num`` sessions ``ag0, ag1, ...``: turn 1 appends the task, every later turn the previous
    tool call's output (clipped to ``tool_range``); every turn's reply is drawn from ``output``."""
    lo, hi = tool_range
    if not 1 <= lo <= hi:
        raise ValueError(f"tool_min={lo}, tool_max={hi}: need 1 <= tool_min <= tool_max")
    rng = np.random.default_rng([seed, 4])
    counts = turns.sample_tokens(rng, num)
    total = int(counts.sum())
    tasks = task.sample_tokens(rng, num).tolist()
    tools = tool_output.sample_tokens(rng, total - num).clip(lo, hi).tolist()
    outs = output.sample_tokens(rng, total).tolist()
    convs: list[Conversation] = []
    start = 0
    for i, count in enumerate(counts.tolist()):
        users = [tasks[i], *tools[start - i : start - i + count - 1]]
        replies = outs[start : start + count]
        convs.append((f"ag{i}", tuple(Exchange(u, o) for u, o in zip(users, replies, strict=True))))
        start += count
    return convs
