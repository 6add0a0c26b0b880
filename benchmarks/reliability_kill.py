"""SIGKILL a decode worker in the middle of a load run and count what every client saw.

    python benchmarks/reliability_kill.py [--duration-s 30] [--kill-at-s 10] [--rate 2] [--seed 0]

An emulated 1P2D cluster (real time, ``h100-llama31-8b``) behind the sglang_ppd router (in this
process, policy ``ppd_deflect``). Closed-loop multi-turn sessions stream from ``/generate``; at
``--kill-at-s`` one decode worker is SIGKILLed. Each request is classified: completed; a clean
retryable error before its first token (a JSON error with 502/503/504); a clean error event after
its first token (then ``[DONE]``); lost (connection error, malformed stream) or hung (no end within
``--request-timeout-s``). Right after the kill a probe request is sent every 50 ms for 2 s: the
first probe's latency and how many probes failed say whether new requests are served at once.
Writes ``benchmarks/results/reliability_kill.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from reliability_cluster import cluster

from sglang_ppd.metrics.result import machine_info, write_result_json

RESULT = Path(__file__).parent / "results" / "reliability_kill.json"
SYSTEM = "You are a helpful assistant that answers from the attached manual. " * 40


async def one(s: aiohttp.ClientSession, url: str, text: str, max_new: int, hdrs: dict[str, str],
              timeout_s: float) -> tuple[str, str]:  # fmt: skip
    """(outcome, generated text)."""
    body = {"text": text, "stream": True, "sampling_params": {"max_new_tokens": max_new}}
    out, got_done, got_error, tokens = "", False, False, 0
    try:
        async with asyncio.timeout(timeout_s), s.post(f"{url}/generate", json=body, headers=hdrs) as r:
            if r.status != 200:
                err = orjson.loads(await r.read())
                clean = isinstance(err.get("error"), dict) and r.status in (502, 503, 504)
                return ("error_before_first_token" if clean else f"unclean_{r.status}"), ""
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    got_done = True
                    continue
                obj = orjson.loads(data)
                if "error" in obj:
                    got_error = True
                else:
                    tokens, out = obj["meta_info"]["completion_tokens"], obj["text"]
    except TimeoutError:
        return "hung", ""
    except (aiohttp.ClientError, ValueError):
        return "lost", ""
    if got_error and got_done:
        return "error_event_after_first_token", out
    return ("completed" if got_done and tokens > 0 else "lost"), out


async def session(s: aiohttp.ClientSession, url: str, sid: int, args: argparse.Namespace, end_s: float,
                  counts: dict[str, int]) -> None:  # fmt: skip
    rng = random.Random(args.seed * 1000 + sid)
    history = f"{SYSTEM} Conversation {sid}."
    turn = 0
    while time.monotonic() < end_s:
        turn += 1
        history += f" User turn {turn}: " + "question " * rng.randint(10, 60)
        hdrs = {"x-ppd-session-id": f"s{sid}", "x-ppd-turn": str(turn)}
        outcome, text = await one(s, url, history, rng.randint(16, 64), hdrs, args.request_timeout_s)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "completed":
            history, turn = f"{SYSTEM} Conversation {sid}b.", 0  # the client starts over
        else:
            history += " " + text
        await asyncio.sleep(rng.expovariate(1.0))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    counts: dict[str, int] = {}
    probes: list[tuple[float, str]] = []
    inflight: int | None = None
    async with cluster(1, 2, "ppd_deflect") as (workers, router, url):
        victim = workers[1]
        t0 = time.monotonic()
        end_s = t0 + args.duration_s
        async with aiohttp.ClientSession() as s:
            sessions = []
            for sid in range(int(args.rate * args.duration_s)):
                sessions.append(asyncio.create_task(session(s, url, sid, args, end_s, counts)))
                await asyncio.sleep(1.0 / args.rate)
                if victim.proc.returncode is None and time.monotonic() - t0 >= args.kill_at_s:
                    inflight = router.registry.get(victim.url).num_inflight  # type: ignore[union-attr]
                    victim.proc.kill()
                    kill_s = time.monotonic()
                    for i in range(40):
                        sent = time.monotonic()
                        outcome, _ = await one(s, url, f"probe {i}", 4, {}, 10)
                        took_ms = 1000 * (time.monotonic() - sent)
                        ok = f"completed in {took_ms:.0f} ms"
                        probes.append((sent - kill_s, ok if outcome == "completed" else outcome))
                        await asyncio.sleep(max(0.0, kill_s + 0.05 * (i + 1) - time.monotonic()))
            await asyncio.gather(*sessions)
        rel = router.reliability.stats()
        retries = router.metrics.retries
        evicted = not router.registry.get(victim.url).healthy  # type: ignore[union-attr]
    first_ok = next((t for t, o in probes if o.startswith("completed")), None)
    return {
        "benchmark": "reliability_kill: a decode worker SIGKILLed mid-load",
        "command": "python benchmarks/reliability_kill.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "cluster": "emulated 1P2D, time scale 1, profile h100-llama31-8b, router in-process (ppd_deflect)",
        "killed_decode_inflight_at_kill": inflight,
        "outcomes": counts,
        "lost_or_hung": counts.get("lost", 0) + counts.get("hung", 0),
        "unclean": sum(n for k, n in counts.items() if k.startswith("unclean")),
        "router_retries": retries,
        "victim_evicted": evicted,
        "probes_after_kill": [{"sent_after_kill_s": round(t, 3), "outcome": o} for t, o in probes],
        "first_probe": probes[0][1] if probes else None,
        "first_successful_probe_sent_after_kill_s": first_ok,
        "num_failed_probes": sum(not o.startswith("completed") for _, o in probes),
        "reliability": rel,
        "machine": machine_info(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--kill-at-s", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=1.0, help="new sessions per second")
    p.add_argument("--request-timeout-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    summary = asyncio.run(main_async(args))
    write_result_json(args.out, summary)
    keys = ("outcomes", "lost_or_hung", "unclean", "first_probe", "num_failed_probes", "victim_evicted")
    print({k: summary[k] for k in keys}, f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
