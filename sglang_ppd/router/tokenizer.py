"""Tokenize once in the router, so every worker sees the same ``input_ids`` and hit lengths are exact.

Two tokenizers:

- :class:`ByteTokenizer` (default, and what emulated clusters use): UTF-8 bytes are token ids
  0..255; ids >= 256 decode to nothing. Its chat template is a fixed plain-text one,
  ``"<|role|>\\ncontent\\n"`` per message plus ``"<|assistant|>\\n"``. Deterministic, dependency-free.
- :class:`HfTokenizer`: a local Hugging Face tokenizer directory (``--tokenizer PATH``), through
  ``transformers.AutoTokenizer`` (chat template from the tokenizer config) when transformers is
  installed, else through the lighter ``tokenizers`` package (``tokenizer.json``) with the
  ``chat_template`` of ``tokenizer_config.json`` rendered by a sandboxed jinja2. No hub downloads:
  the path must exist locally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class Tokenizer(Protocol):
    name: str
    id_limit: int | None
    """Token ids must be below this (the model's vocabulary, added tokens included); ``None`` when
    the tokenizer does not know the model's vocabulary."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]: ...


class ByteTokenizer:
    name = "byte"
    vocab_size = 256
    id_limit: int | None = None
    """A stand-in for emulated workers, whose clients send ids of any (e.g. a 32k) vocabulary."""

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
        p = Path(path)
        if not p.exists():
            raise ValueError(f"tokenizer path {path!r} does not exist (a local directory is required)")
        self.name = path
        self._tok: Any = None
        self._fast: Any = None
        try:
            from transformers import AutoTokenizer  # heavy, optional: only with --tokenizer
        except ImportError:
            self._load_tokenizers_package(p)
        else:
            self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.id_limit: int | None = self._vocab_size()

    def _vocab_size(self) -> int:
        """The model's vocabulary, added (special) tokens included."""
        if self._tok is not None:
            return len(self._tok)
        return int(self._fast.get_vocab_size(with_added_tokens=True))

    def _load_tokenizers_package(self, p: Path) -> None:
        try:
            from tokenizers import Tokenizer as FastTokenizer
        except ImportError:
            raise ValueError(
                "--tokenizer needs 'transformers' or 'tokenizers' (pip install tokenizers)"
            ) from None
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise ValueError(f"no tokenizer.json at {file}")
        self._fast = FastTokenizer.from_file(str(file))
        config_file = file.parent / "tokenizer_config.json"
        self._config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}

    def encode(self, text: str) -> list[int]:
        if self._tok is not None:
            return list(self._tok.encode(text, add_special_tokens=True))
        return list(self._fast.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: list[int]) -> str:
        if self._tok is not None:
            return str(self._tok.decode(ids, skip_special_tokens=True))
        return str(self._fast.decode(ids, skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        clean = [{"role": m["role"], "content": _content_text(m.get("content"))} for m in messages]
        if self._tok is not None:
            return list(self._tok.apply_chat_template(clean, tokenize=True, add_generation_prompt=True))
        template = self._config.get("chat_template")
        if not isinstance(template, str):
            raise ValueError(f"tokenizer {self.name} has no chat_template in tokenizer_config.json")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def special(key: str) -> str:
            value = self._config.get(key)
            return value.get("content", "") if isinstance(value, dict) else str(value or "")

        text = (
            ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            .from_string(template)
            .render(
                messages=clean,
                add_generation_prompt=True,
                bos_token=special("bos_token"),
                eos_token=special("eos_token"),
            )
        )
        # The template already placed the special tokens: encode without adding them again.
        return list(self._fast.encode(text, add_special_tokens=False).ids)


def load_tokenizer(path: str | None) -> Tokenizer:
    return ByteTokenizer() if path is None else HfTokenizer(path)
