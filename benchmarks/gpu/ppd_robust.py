"""Correctness checks of the PPD decode server on the GPU (run by validate_ppd.sh with PPD_ROBUST=1).

  equal    greedy output of a prompt prefilled locally on D equals the PD output (P prefill + KV
           transfer) for the same prompt, and an append-prefill's output equals the same prompt
           prefilled from scratch on D
  abort    clients that disconnect from a queued and from a mid-chunk deflected prefill: the server
           keeps serving, its local-prefill count and KV usage return to where they were
  retract  (D started with SGLANG_TEST_RETRACT=1: SGLang retracts decoding requests every few steps)
           local and PD requests all complete, with the same greedy outputs as the passes above
Writes one JSON (--out); prints one line per check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import aiohttp
import zmq
import zmq.asyncio

from sglang_ppd.protocol import telemetry

VOCAB = 32000


def ids(seed: int, n: int) -> list[int]:
    r = random.Random(seed)
    return [r.randrange(3, VOCAB) for _ in range(n)]


def body(prompt: list[int], max_new: int, **extra: Any) -> dict[str, Any]:
    sp = {"max_new_tokens": max_new, "ignore_eos": True, "temperature": 0.0}
    return {"input_ids": prompt, "sampling_params": sp, **extra}


async def gen(
    s: aiohttp.ClientSession, url: str, b: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    async with s.post(url + "/generate", json=b, headers=headers or {}) as r:
        out = await r.json(content_type=None)
        return {"status": r.status, "output_ids": out.get("output_ids"), "meta": out.get("meta_info", {})}


async def snapshot(endpoint: str) -> dict[str, Any] | None:
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, telemetry.TOPIC)
    sub.connect(endpoint)
    try:
        if await sub.poll(timeout=3000):
            t = telemetry.decode((await sub.recv_multipart())[1])
            return {f: getattr(t, f) for f in t.__struct_fields__}
        return None
    finally:
        sub.close(linger=0)


def local(prompt: list[int], max_new: int, route: str = "local", chunk: int | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {"do_local_prefill": True, "ppd_route": route}
    if chunk:
        extra["ppd_chunk_len"] = chunk
    return body(prompt, max_new, **extra)


async def pd_direct(s: aiohttp.ClientSession, a: argparse.Namespace, prompt: list[int], max_new: int) -> Any:
    """The PD path without the router (as mini_lb does): the same body, with bootstrap fields, to P and D.
    Through the router the request could be routed local: D's KV events carry no ``extra_key``."""
    b = body(
        prompt,
        max_new,
        bootstrap_host="127.0.0.1",
        bootstrap_port=a.bootstrap_port,
        bootstrap_room=random.getrandbits(63),
    )
    _, d = await asyncio.gather(gen(s, a.prefill, b), gen(s, a.decode, b))
    return d


async def equal(s: aiohttp.ClientSession, a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": []}
    for k in range(3):
        p = ids(100 + k, 1500)
        # The local prefill first, in its own radix namespace (extra_key), chunked; then the same
        # prompt through the router on the PD path, which therefore cannot reuse the local KV.
        lo = await gen(s, a.decode, local(p, 24, route="deflect", chunk=256) | {"extra_key": f"eq{k}"})
        pd = await pd_direct(s, a, p, 24)
        out["pairs"].append(
            {
                "pd": pd["output_ids"],
                "local": lo["output_ids"],
                "local_cached": lo["meta"].get("cached_tokens"),
            }
        )
    # An append on a resident history vs the same prompt recomputed in another namespace.
    hist = ids(400, 2000)
    first = await gen(s, a.decode, local(hist, 16))
    t2 = hist + (first["output_ids"] or []) + ids(401, 100)
    app = await gen(s, a.decode, local(t2, 24))
    cold = await gen(s, a.decode, local(t2, 24) | {"extra_key": "cold"})
    out["append"] = {
        "cached": app["meta"].get("cached_tokens"),
        "append": app["output_ids"],
        "cold_cached": cold["meta"].get("cached_tokens"),
        "cold": cold["output_ids"],
    }
    n_eq = sum(1 for x in out["pairs"] if x["pd"] == x["local"] and x["pd"])
    out["ok"] = n_eq == len(out["pairs"]) and app["output_ids"] == cold["output_ids"]
    print(
        f"[equal] PD vs local (chunked) greedy outputs identical: {n_eq}/{len(out['pairs'])}; append (cached "
        f"{app['meta'].get('cached_tokens')}) vs recompute (cached {cold['meta'].get('cached_tokens')}) "
        f"identical: "
        f"{app['output_ids'] == cold['output_ids']}",
        flush=True,
    )
    return out


async def abort(s: aiohttp.ClientSession, a: argparse.Namespace) -> dict[str, Any]:
    before = await snapshot(a.telemetry)
    long = asyncio.create_task(gen(s, a.decode, local(ids(500, 30000), 4, route="deflect", chunk=64)))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(gen(s, a.decode, local(ids(501, 4000), 4, route="deflect", chunk=64)))
    await asyncio.sleep(0.5)
    mid = await snapshot(a.telemetry)
    for t in (long, queued):
        t.cancel()  # the client goes away; SGLang notices the disconnect and aborts
    await asyncio.gather(long, queued, return_exceptions=True)
    after = None
    deadline = time.time() + 12
    while time.time() < deadline:
        after = await snapshot(a.telemetry)
        if after and after["num_local_prefills"] == 0 and after["num_running"] == 0:
            break
        await asyncio.sleep(0.5)
    probe = await gen(s, a.decode, local(ids(502, 300), 8))
    keys = ("num_local_prefills", "queued_local_prefill_tokens", "kv_used_tokens", "num_running")
    res = {
        k: {"before": (before or {}).get(k), "during": (mid or {}).get(k), "after": (after or {}).get(k)}
        for k in keys
    }
    ok = (
        bool(after)
        and after["num_local_prefills"] == 0
        and probe["status"] == 200
        and (mid or {}).get("num_local_prefills", 0) > 0
    )
    print(
        f"[abort] {json.dumps(res)}; next request status {probe['status']} -> {'OK' if ok else 'CHECK'}",
        flush=True,
    )
    return {"ok": ok, "telemetry": res, "probe_status": probe["status"]}


async def retract(s: aiohttp.ClientSession, a: argparse.Namespace, ref: dict[str, Any]) -> dict[str, Any]:
    prompts = [ids(100 + k, 1500) for k in range(3)]
    tasks = [gen(s, a.decode, local(p, 24, route="deflect", chunk=256)) for p in prompts]
    tasks += [pd_direct(s, a, p, 24) for p in prompts]
    tasks += [gen(s, a.decode, local(ids(600 + k, 800), 64)) for k in range(16)]
    t0 = time.time()
    outs = await asyncio.gather(*tasks)
    ref_out = [x["pd"] for x in ref.get("pairs", [])]
    same_local = sum(1 for o, r in zip(outs[:3], ref_out, strict=False) if o["output_ids"] == r)
    same_pd = sum(1 for o, r in zip(outs[3:6], ref_out, strict=False) if o["output_ids"] == r)
    complete = sum(1 for o in outs if o["status"] == 200 and len(o["output_ids"] or []) in (24, 64))
    ok = complete == len(outs) and same_local == 3 and same_pd == 3
    print(
        f"[retract] {complete}/{len(outs)} complete in {time.time() - t0:.1f}s under forced retraction; "
        f"greedy equal to the reference: local {same_local}/3, PD {same_pd}/3 -> {'OK' if ok else 'CHECK'}",
        flush=True,
    )
    return {"ok": ok, "complete": complete, "total": len(outs), "same_local": same_local, "same_pd": same_pd}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--decode", required=True)
    ap.add_argument("--prefill", default="http://127.0.0.1:30100")
    ap.add_argument("--bootstrap-port", type=int, default=8998)
    ap.add_argument("--telemetry", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", choices=["equal_abort", "retract"], required=True)
    a = ap.parse_args()
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as s:
        try:
            with open(a.out) as f:
                result = json.load(f)
        except FileNotFoundError:
            result = {}
        if a.phase == "equal_abort":
            result["equal"] = await equal(s, a)
            result["abort"] = await abort(s, a)
        else:
            result["retract"] = await retract(s, a, result.get("equal", {}))
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
