"""Writes the SGLang wire goldens: KV-event batches and LoadStat payloads encoded by each release's own
msgspec classes, taken from the released wheel's source (not reimplemented here).

    python tests/goldens/make_sglang_goldens.py [--cache DIR]

For each release it downloads the wheel (``pip download sglang==X --no-deps``), parses
``srt/disaggregation/kv_events.py`` and ``srt/managers/scheduler_components/load_publisher.py`` with
``ast``, executes only their ``msgspec.Struct`` class definitions (the modules themselves import zmq,
torch-adjacent code and SGLang's runtime), builds the same sample events with each release's fields,
and encodes them with ``msgspec.msgpack.Encoder()`` as SGLang's publishers do. Output, next to this
script: ``sglang-<X>-kv.msgpack``, ``sglang-<X>-load.msgpack`` (when the release has LoadStat) and
``sglang_goldens.json`` (what each golden holds, in field names, for the tests to compare against).
"""

from __future__ import annotations

import argparse
import ast
import enum
import json
import subprocess
import sys
import tempfile
import typing
import zipfile
from pathlib import Path
from typing import Any

import msgspec

RELEASES = ("0.5.17", "0.5.19", "0.5.20", "0.5.22", "0.5.23")
KV = "sglang/srt/disaggregation/kv_events.py"
LOAD = "sglang/srt/managers/scheduler_components/load_publisher.py"
HERE = Path(__file__).parent

# Extremes on purpose: SGLang's block hashes are signed 64-bit.
H1, H2, H3 = -(2**63), 2**63 - 1, 12345


def wheel_source(version: str, cache: Path, member: str) -> str | None:
    wheels = list(cache.glob(f"sglang-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", f"sglang=={version}", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_34_x86_64",
             "-d", str(cache)],
            check=True,
        )  # fmt: skip
        wheels = list(cache.glob(f"sglang-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as zf:
        return zf.read(member).decode() if member in zf.namelist() else None


def struct_classes(source: str) -> dict[str, Any]:
    """The module's msgspec.Struct subclasses (and enums), defined from its own source text."""
    # The typing names SGLang's annotations use.
    typing_names = ("Any", "Optional", "Union", "List", "Dict", "Literal")
    ns: dict[str, Any] = {n: getattr(typing, n) for n in typing_names}
    ns.update(msgspec=msgspec, enum=enum, __name__="sglang_wire")
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {ast.unparse(b) for b in node.bases}
        if bases & ({"msgspec.Struct", "str, enum.Enum", "enum.Enum"} | set(ns)):
            exec(compile(ast.Module([node], []), "<sglang>", "exec"), ns)  # noqa: S102 - wheel source
    return ns


def kv_golden(ns: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    stored_fields = ns["BlockStored"].__struct_fields__
    extra = {k: v for k, v in (("cache_salt", "salt-a"), ("session_id", "sess-1"), ("lora_name", "adapter-x"))
             if k in stored_fields}  # fmt: skip
    first = dict(block_hashes=[H1, H2], parent_block_hash=None, token_ids=list(range(1, 9)), block_size=4,
                 lora_id=None, medium="GPU")  # fmt: skip
    second = dict(block_hashes=[H3], parent_block_hash=H2, token_ids=[9, 10, 11, 12], block_size=4, lora_id=7)
    events = [ns["BlockStored"](**first)]
    expected = [{"type": "BlockStored", **first}]
    if extra:
        events.append(ns["BlockStored"](**second, **extra))
        expected.append({"type": "BlockStored", **second, **extra, "medium": None})
    elif "BlockStoredWithMetadata" in ns:  # 0.5.19: the salt rides in a trailing metadata struct
        meta = ns["BlockStoredMetadata"](cache_salt="salt-a")
        events.append(ns["BlockStoredWithMetadata"](**second, metadata=meta))
        expected.append({"type": "BlockStored", **second, "cache_salt": "salt-a", "medium": None})
    else:
        events.append(ns["BlockStored"](**second))
        expected.append({"type": "BlockStored", **second, "medium": None})
    events += [ns["BlockRemoved"](block_hashes=[H1], medium="GPU"), ns["BlockRemoved"](block_hashes=[H3]),
               ns["AllBlocksCleared"]()]  # fmt: skip
    expected += [{"type": "BlockRemoved", "block_hashes": [H1], "medium": "GPU"},
                 {"type": "BlockRemoved", "block_hashes": [H3], "medium": None},
                 {"type": "AllBlocksCleared"}]  # fmt: skip
    batch = ns["KVEventBatch"](ts=1733.25, events=events, attn_dp_rank=1)
    return msgspec.msgpack.Encoder().encode(batch), {"ts": 1733.25, "attn_dp_rank": 1, "events": expected}


def load_golden(ns: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    values = dict(num_running_reqs=12, num_waiting_reqs=3, num_tokens=40960, max_total_num_tokens=500000,
                  attn_dp_rank=1, num_waiting_uncached_tokens=7000, num_total_tokens=47960,
                  max_running_requests=256, total_prefill_uncached_tokens=10**12,
                  total_prefill_busy_us=2**40)  # fmt: skip
    fields = ns["LoadStat"].__struct_fields__
    values = {k: v for k, v in values.items() if k in fields}
    return msgspec.msgpack.Encoder().encode(ns["LoadStat"](**values)), values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="wheel download directory (default: a temp dir)")
    args = ap.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="sglang-wheels-"))
    cache.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    for version in RELEASES:
        kv_src = wheel_source(version, cache, KV)
        assert kv_src is not None, f"{version} has no {KV}"
        payload, expected = kv_golden(struct_classes(kv_src))
        (HERE / f"sglang-{version}-kv.msgpack").write_bytes(payload)
        entry: dict[str, Any] = {"kv": expected, "kv_shape": msgspec.msgpack.decode(payload)}
        load_src = wheel_source(version, cache, LOAD)
        if load_src is not None:
            payload, values = load_golden(struct_classes(load_src))
            (HERE / f"sglang-{version}-load.msgpack").write_bytes(payload)
            entry["load"], entry["load_shape"] = values, msgspec.msgpack.decode(payload)
        index[version] = entry
        has_load = "LoadStat" if "load" in entry else "no LoadStat"
        print(version, "kv", len(entry["kv_shape"][1]), "events;", has_load)
    (HERE / "sglang_goldens.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
