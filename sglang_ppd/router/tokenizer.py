"""Tokenize once in the router, so every worker sees the same ``input_ids`` and hit lengths are exact.

Two tokenizers:

- :class:`ByteTokenizer` (default, and what emulated clusters use): UTF-8 bytes are token ids
  0..255; ids >= 256 decode to nothing. Its chat template is a fixed plain-text one,
  ``"<|role|>\\ncontent\\n"`` per message plus ``"<|assistant|>\\n"``. Deterministic, dependency-free.
- :class:`HfTokenizer`: a local Hugging Face tokenizer directory (``--tokenizer PATH``), through
  ``transformers.AutoTokenizer`` (chat template from the tokenizer config). No hub downloads: the
  path must exist locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]: ...


class ByteTokenizer:
    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        parts = [f"<|{m['role']}|>\n{_content_text(m.get('content'))}\n" for m in messages]
        parts.append("<|assistant|>\n")
        return self.encode("".join(parts))


def _content_text(content: Any) -> str:
    """OpenAI content: a string, or a list of parts of which only text parts are supported."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ValueError("only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError("message content must be a string or a list of text parts")


class HfTokenizer:
    def __init__(self, path: str) -> None:
        if not Path(path).exists():
            raise ValueError(f"tokenizer path {path!r} does not exist (a local directory is required)")
        try:
            from transformers import AutoTokenizer  # heavy, optional: only with --tokenizer
        except ImportError:
            raise ValueError(
                "--tokenizer needs the 'transformers' package (pip install transformers)"
            ) from None
        self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.name = path

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True))

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        clean = [{"role": m["role"], "content": _content_text(m.get("content"))} for m in messages]
        return list(self._tok.apply_chat_template(clean, tokenize=True, add_generation_prompt=True))


def load_tokenizer(path: str | None) -> Tokenizer:
    return ByteTokenizer() if path is None else HfTokenizer(path)
