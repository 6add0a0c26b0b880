"""GPU validation client for a PPD-capable SGLang decode server (run by validate_ppd.sh on the device).

Phases (each writes its raw observations into one JSON; analysis happens in fit_profile.py):
  a  a PD request through the sglang_ppd router (route header "pd", completes);
  b  its Turn 2 through the router: route "local", cached_tokens vs history, P saw no new prefill;
  c  a deflected full prefill sent straight to D with the router's fields, chunked (ppd_chunk_len);
  d  32 running decodes on D, with a 128-token append / a 2048-token full prefill injected;
  e  a small multi-turn workload replayed through the router (streaming, <= 8 in flight), with the
     exact TurnSpecs, for the simulator comparison.
Token ids are random (random-weight model, --skip-tokenizer-init); every request ignores EOS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

VOCAB = 32000
SESSION_HEADER, TURN_HEADER, ROUTE_HEADER = "x-ppd-session-id", "x-ppd-turn", "x-ppd-route"


def rand_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(3, VOCAB) for _ in range(n)]


def prefill_lines(log_path: str) -> int:
    """P's prefill batches, without SGLang's own 1-token health-check generations."""
    try:
        with open(log_path, errors="replace") as f:
            return sum(1 for line in f if "Prefill batch" in line and "#new-token: 1," not in line)
    except FileNotFoundError:
        return -1


async def post(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    t0 = time.time()
    async with s.post(url + "/generate", json=body, headers=headers or {}) as r:
        text = await r.text()
        t1 = time.time()
        try:
            out = json.loads(text)
        except ValueError:
            out = {"raw": text[:500]}
        meta = out.get("meta_info", {}) if isinstance(out, dict) else {}
        return {
            "status": r.status,
            "route": r.headers.get(ROUTE_HEADER),
            "t_send": t0,
            "t_done": t1,
            "e2e_ms": (t1 - t0) * 1000,
            "cached_tokens": meta.get("cached_tokens"),
            "prompt_tokens": meta.get("prompt_tokens"),
            "completion_tokens": meta.get("completion_tokens"),
            "output_ids": out.get("output_ids") if isinstance(out, dict) else None,
            "error": None if r.status == 200 else text[:300],
        }


def gen(ids: list[int], max_new: int, **extra: Any) -> dict[str, Any]:
    return {
        "input_ids": ids,
        "sampling_params": {"max_new_tokens": max_new, "ignore_eos": True, "temperature": 0.0},
        **extra,
    }


def local(ids: list[int], max_new: int, route: str = "local", chunk: int | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {"do_local_prefill": True, "ppd_route": route}
    if chunk:
        extra["ppd_chunk_len"] = chunk
    return gen(ids, max_new, **extra)


async def phase_ab(s: aiohttp.ClientSession, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    res: dict[str, Any] = {}
    t1_ids = rand_ids(rng, 2000)
    h1 = {SESSION_HEADER: "val-s1", TURN_HEADER: "1"}
    r1 = await post(s, a.router, gen(t1_ids, 32), h1)
    res["a"] = {k: v for k, v in r1.items() if k != "output_ids"}
    res["a"]["ok"] = r1["status"] == 200 and r1["route"] == "pd" and r1["completion_tokens"] == 32
    print(
        f"[a] PD via router: status {r1['status']} route {r1['route']} tokens {r1['completion_tokens']} "
        f"e2e {r1['e2e_ms']:.1f} ms -> {'OK' if res['a']['ok'] else 'FAIL'}",
        flush=True,
    )
    out1 = r1["output_ids"] or []
    history = t1_ids + list(out1)
    await asyncio.sleep(1.0)  # KV events from D reach the router's prefix index
    p_before = prefill_lines(a.p_log)
    t2_ids = history + rand_ids(rng, 128)
    r2 = await post(s, a.router, gen(t2_ids, 16), {SESSION_HEADER: "val-s1", TURN_HEADER: "2"})
    await asyncio.sleep(0.5)
    p_after = prefill_lines(a.p_log)
    b = {k: v for k, v in r2.items() if k != "output_ids"}
    b.update(history_len=len(history), prompt_len=len(t2_ids), p_prefill_lines_delta=p_after - p_before)
    b["ok"] = (
        r2["status"] == 200
        and r2["route"] == "local"
        and (r2["cached_tokens"] or 0) >= len(history) - 2
        and p_after == p_before
    )
    print(
        f"[b] Turn 2 via router: route {r2['route']} cached {r2['cached_tokens']} of history {len(history)} "
        f"(prompt {len(t2_ids)}), P prefill log lines +{p_after - p_before}, e2e {r2['e2e_ms']:.1f} ms "
        f"-> {'OK' if b['ok'] else 'FAIL'}",
        flush=True,
    )
    if not b["ok"]:
        # The router did not take the local route: show the worker side alone, with the router's fields.
        r3 = await post(s, a.decode, local(t2_ids, 16))
        b["direct"] = {k: v for k, v in r3.items() if k != "output_ids"}
        print(
            f"[b] direct to D with do_local_prefill: status {r3['status']} cached {r3['cached_tokens']}",
            flush=True,
        )
    res["b"] = b
    # Transfer calibration: fresh single PD requests, one at a time, TTFT by streaming.
    cal = []
    for n in (1024, 2048, 3072, 4096):
        r = await one_turn(s, a.router, rand_ids(rng, n), 4, {SESSION_HEADER: f"cal-{n}", TURN_HEADER: "1"})
        r.pop("output_ids")
        cal.append({"prompt_len": n, **r})
    res["pd_calibration"] = cal
    # Request-path floor probes: the same path as phase e (router, streaming), one new token on the
    # resident history of an idle D, so TTFT minus that forward is HTTP, router, intake and result path.
    hist2 = t2_ids + list(r2["output_ids"] or [])
    probes = []
    for k in range(3):
        ids = hist2 + rand_ids(rng, 1)
        hdr = {SESSION_HEADER: "val-s1", TURN_HEADER: str(3 + k)}
        r = await one_turn(s, a.router, ids, 2, hdr)
        hist2 = ids + list(r.pop("output_ids"))
        probes.append({"prompt_len": len(ids), **r})
        await asyncio.sleep(0.2)
    res["floor_probes"] = probes
    print(
        "[a3] router-path probes TTFT: "
        + ", ".join(f"{p['ttft_ms']:.1f} ms ({p['route']}, cached {p['cached_tokens']})" for p in probes),
        flush=True,
    )
    print(
        "[a2] PD TTFT by prompt length: "
        + ", ".join(f"{c['prompt_len']}: {c['ttft_ms']:.1f} ms ({c['route']})" for c in cal),
        flush=True,
    )
    return res


async def phase_c(s: aiohttp.ClientSession, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    ids = rand_ids(rng, 2048)
    bg = [asyncio.create_task(post(s, a.decode, local(rand_ids(rng, 512), 256))) for _ in range(8)]
    await asyncio.sleep(0.3)
    r = await post(s, a.decode, local(ids, 8, route="deflect", chunk=512) | {"rid": "val-deflect"})
    await asyncio.gather(*bg)
    c = {k: v for k, v in r.items() if k != "output_ids"}
    c["ok"] = r["status"] == 200 and r["completion_tokens"] == 8
    print(
        f"[c] deflected 2048-token prefill on D (chunk 512, 8 decodes running): status {r['status']} "
        f"tokens {r['completion_tokens']} cached {r['cached_tokens']} e2e {r['e2e_ms']:.1f} ms",
        flush=True,
    )
    return c


async def phase_d(s: aiohttp.ClientSession, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    hist = rand_ids(rng, 4096)
    warm = await post(s, a.decode, local(hist, 1) | {"rid": "val-hist"})
    rounds: dict[str, Any] = {"history_prefill": {k: v for k, v in warm.items() if k != "output_ids"}}
    injections: dict[str, dict[str, Any] | None] = {
        "none": None,
        "append128": local(hist + rand_ids(rng, 128), 1),
        "full2048": local(rand_ids(rng, 2048), 1, route="deflect"),
        "full2048_chunk256": local(rand_ids(rng, 2048), 1, route="deflect", chunk=256),
    }
    for name, inj in injections.items():
        if name == "append128":  # keep the history most recently used, so LRU eviction spares it
            rounds["history_refresh"] = {
                k: v
                for k, v in (await post(s, a.decode, local(hist, 1) | {"rid": "val-refresh"})).items()
                if k != "output_ids"
            }
        decs = [
            asyncio.create_task(post(s, a.decode, local(rand_ids(rng, 1024), a.decode_len)))
            for _ in range(32)
        ]
        t_wait = time.time()
        snap = await wait_all_running(a.telemetry, 32, a.inject_timeout_s)
        waited_s = round(time.time() - t_wait, 3)
        await asyncio.sleep(a.inject_after_s)
        ri = None
        if inj is not None:
            ri = await post(s, a.decode, inj | {"rid": f"val-inj-{name}"})
        done = await asyncio.gather(*decs)
        tpots = [d["e2e_ms"] / a.decode_len for d in done]
        rounds[name] = {
            "decoders": [{k: v for k, v in d.items() if k != "output_ids"} for d in done],
            "injection": None if ri is None else {k: v for k, v in ri.items() if k != "output_ids"},
            "mean_e2e_per_token_ms": sum(tpots) / len(tpots),
            "wait_all_running_s": waited_s,
            "telemetry_at_injection": snap,
        }
        extra = (
            ""
            if ri is None
            else (f", injection e2e {ri['e2e_ms']:.1f} ms cached {ri['cached_tokens']} status {ri['status']}")
        )
        print(
            f"[d] round {name}: 32 decoders e2e/token {rounds[name]['mean_e2e_per_token_ms']:.3f} ms{extra}",
            flush=True,
        )
        await asyncio.sleep(0.3)
    return rounds


async def wait_all_running(endpoint: str, n: int, timeout_s: float) -> dict[str, Any] | None:
    """Polls the decode server's own telemetry until ``n`` requests decode and no local prefill is left."""
    import zmq
    import zmq.asyncio

    from sglang_ppd.protocol import telemetry

    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, telemetry.TOPIC)
    sub.connect(endpoint)
    deadline = time.time() + timeout_s
    last = None
    try:
        while time.time() < deadline:
            if await sub.poll(timeout=200):
                t = telemetry.decode((await sub.recv_multipart())[1])
                last = {f: getattr(t, f) for f in t.__struct_fields__}
                if t.num_running >= n and t.num_local_prefills == 0:
                    return last
        print(f"[d] WARNING: not all {n} decoders running after {timeout_s}s: {last}", flush=True)
        return last
    finally:
        sub.close(linger=0)


async def one_turn(
    s: aiohttp.ClientSession, url: str, ids: list[int], out_len: int, headers: dict[str, str]
) -> dict[str, Any]:
    body = gen(ids, out_len, stream=True)
    t0 = time.time()
    first = last = None
    n_chunks = 0
    final: dict[str, Any] = {}
    route = None
    acc: list[int] = []
    async with s.post(url + "/generate", json=body, headers=headers) as r:
        route = r.headers.get(ROUTE_HEADER)
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            now = time.time()
            obj = json.loads(line[5:])
            n_chunks += 1
            if first is None:
                first = now
            last = now
            final = obj
            got = obj.get("output_ids") or []
            # cumulative (SGLang's default) or incremental (--stream-output) output_ids
            acc = got if got[: len(acc)] == acc else acc + got
    meta = final.get("meta_info", {})
    n = meta.get("completion_tokens") or 0
    ids_out = acc
    return {
        "route": route,
        "t_send": t0,
        "ttft_ms": None if first is None else (first - t0) * 1000,
        "tpot_ms": None if first is None or n < 2 else (last - first) * 1000 / (n - 1),
        "e2e_ms": None if last is None else (last - t0) * 1000,
        "completion_tokens": n,
        "cached_tokens": meta.get("cached_tokens"),
        "num_chunks": n_chunks,
        "output_ids": ids_out,
    }


async def phase_e(s: aiohttp.ClientSession, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Closed-loop sessions: turn 1 open-loop arrivals, later turns after a think time."""
    sessions = []
    for i in range(a.sessions):
        turns = [(rng.randint(1024, 3072), 64)] + [(rng.randint(64, 256), 64) for _ in range(2)]
        sessions.append({"id": f"e{i}", "arrival_s": round(i * a.session_gap_s, 3), "turns": turns})
    t0 = time.time()
    records: list[dict[str, Any]] = []

    async def run(sess: dict[str, Any]) -> None:
        await asyncio.sleep(max(sess["arrival_s"] - (time.time() - t0), 0))
        history: list[int] = []
        for k, (new_len, out_len) in enumerate(sess["turns"], start=1):
            ids = history + rand_ids(rng, new_len)
            hdr = {SESSION_HEADER: sess["id"], TURN_HEADER: str(k)}
            rec = await one_turn(s, a.router, ids, out_len, hdr)
            history = ids + list(rec.pop("output_ids"))
            rec.update(
                session_id=sess["id"],
                turn=k,
                input_len=len(ids),
                output_len=out_len,
                history_len=len(ids) - new_len,
                arrival_rel_s=rec["t_send"] - t0,
            )
            records.append(rec)
            await asyncio.sleep(a.think_s)

    await asyncio.gather(*(run(x) for x in sessions))
    ok = sum(1 for r in records if r["completion_tokens"] == r["output_len"])
    print(
        f"[e] replay: {ok}/{len(records)} turns complete; routes "
        f"{sorted({r['route'] for r in records if r['route']})}",
        flush=True,
    )
    return {"sessions": sessions, "think_s": a.think_s, "records": records}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--decode", required=True)
    ap.add_argument("--p-log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default="abcde")
    ap.add_argument("--decode-len", type=int, default=512)
    ap.add_argument("--telemetry", default="tcp://127.0.0.1:30300")
    ap.add_argument("--inject-after-s", type=float, default=0.1, help="after all decoders run")
    ap.add_argument("--inject-timeout-s", type=float, default=20.0)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--session-gap-s", type=float, default=0.4)
    ap.add_argument("--think-s", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    result: dict[str, Any] = {
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": a.seed,
        "args": vars(a),
    }
    out = Path(a.out)

    def save() -> None:
        out.write_text(json.dumps(result, indent=1))

    timeout = aiohttp.ClientTimeout(total=300)
    conn = aiohttp.TCPConnector(limit=200, force_close=True)  # no stale keep-alive (calibration lesson)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
        steps = [("ab", phase_ab), ("c", phase_c), ("d", phase_d), ("e", phase_e)]
        for key, fn in steps:
            if not set(key) & set(a.phases):
                continue
            t = time.time()
            try:
                result[key] = await fn(s, a, rng)
            except Exception as exc:  # report and go on: later phases are independent
                result[key] = {"exception": repr(exc)}
                print(f"[{key}] EXCEPTION {exc!r}", flush=True)
            result.setdefault("phase_times", {})[key] = [t, time.time()]
            save()
    save()


if __name__ == "__main__":
    asyncio.run(main())
