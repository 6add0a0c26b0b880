"""Router tokenizers: the built-in byte tokenizer, and a local HF tokenizer (``tokenizers`` package +
the chat template of tokenizer_config.json) driving the input_ids the workers receive."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aiohttp
import pytest
from test_router_support import PROFILE, FakeWorker, ScriptedPolicy

from sglang_ppd.router.app import start_server
from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.service import Router
from sglang_ppd.router.tokenizer import ByteTokenizer, HfTokenizer, load_tokenizer

pytestmark = pytest.mark.timeout(30)
TEMPLATE = (
    "{{ bos_token }} {% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_byte_tokenizer_roundtrip_and_template() -> None:
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo")) == "héllo"
    ids = tok.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert tok.decode(ids) == "<|user|>\nhi\n<|assistant|>\n"
    with pytest.raises(ValueError):
        tok.apply_chat_template([{"role": "user", "content": 5}])
    assert isinstance(load_tokenizer(None), ByteTokenizer)
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer("/no/such/tokenizer")


def _make_tokenizer(tmp_path: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: i for i, w in enumerate(["[UNK]", "<s>", "<user>", "<assistant>", "hello", "world", "hi"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": TEMPLATE, "bos_token": "<s>"})
    )
    return tmp_path


async def test_local_hf_tokenizer_feeds_input_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _make_tokenizer(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)  # exercise the light `tokenizers` path
    tok = HfTokenizer(str(path))
    assert tok.encode("hello world") == [4, 5]
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == [1, 2, 6, 3]
    p = await FakeWorker("prefill").start()
    d = await FakeWorker("decode").start()
    cfg = RouterConfig.model_validate(
        {"port": 0, "workers": [{"url": p.url, "role": "prefill"}, {"url": d.url, "role": "decode"}]}
    )
    router = Router(cfg, ScriptedPolicy(), PROFILE, tok, "scripted")
    runner, port = await start_server(router, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            ) as r:
                assert r.status == 200
            async with s.post(f"http://127.0.0.1:{port}/generate", json={"text": "hello world"}) as r:
                assert r.status == 200
            # Token ids past the model's vocabulary are the client's error, not the worker's crash.
            for path, body in (
                ("/generate", {"input_ids": [4, 7]}),
                ("/v1/completions", {"prompt": [2**31 - 1]}),
            ):
                async with s.post(f"http://127.0.0.1:{port}{path}", json=body) as r:
                    assert r.status == 400 and "0..6" in await r.text(), path
        assert [b["input_ids"] for b in d.received] == [[1, 2, 6, 3], [4, 5]]
    finally:
        await runner.cleanup()
        await p.stop()
        await d.stop()
