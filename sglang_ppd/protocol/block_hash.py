"""SGLang's KV block (page) hash, as published in KV events.

Source: sglang 0.5.17 ``srt/mem_cache/cpp_utils/hash_binding.cpp`` (``get_hash`` with a page size)
and ``srt/mem_cache/utils.py`` (``get_hash_str``, ``hash_str_to_int64``). Page ``i``'s digest is
``SHA-256(digest[i-1] || page_i tokens as little-endian uint32)``; the first page has no prior
digest, and a radix node continues from its parent's last digest, so one chain covers a whole
prompt. Events carry the first 8 digest bytes as a *signed* big-endian int64. SGLang hashes a
trailing partial page too, but its paged radix tree only stores whole pages, so prefix lookups use
:func:`full_page_hashes`.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterator, Sequence

_TOKEN_MAX = 2**32 - 1


def digest_to_int64(digest: bytes) -> int:
    """``hash_str_to_int64``: first 8 bytes, big-endian, as a signed int64."""
    return int.from_bytes(digest[:8], "big", signed=True)


def _le_u32(tokens: Sequence[int]) -> bytes:
    try:
        buf = array("I", tokens)
    except OverflowError:
        raise ValueError(f"token id out of uint32 range (0..{_TOKEN_MAX})") from None
    if buf.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte unsigned int
        raise RuntimeError("array('I') is not 32-bit on this platform")
    if sys.byteorder != "little":  # pragma: no cover
        buf.byteswap()
    return buf.tobytes()


def page_digests(token_ids: Sequence[int], page_size: int, prior_digest: bytes | None = None) -> list[bytes]:
    """SHA-256 digests of every page of ``token_ids`` (the last one may be partial), chained."""
    if page_size <= 0:
        raise ValueError("page_size must be positive")
    if prior_digest is not None and len(prior_digest) != 32:
        raise ValueError("prior_digest must be exactly 32 bytes")
    data = _le_u32(token_ids)
    step = page_size * 4
    out: list[bytes] = []
    prior = prior_digest
    sha256 = hashlib.sha256
    for start in range(0, len(data), step):
        h = sha256(prior) if prior is not None else sha256()
        h.update(data[start : start + step])
        prior = h.digest()
        out.append(prior)
    return out


def page_hashes(token_ids: Sequence[int], page_size: int, prior_digest: bytes | None = None) -> list[int]:
    """The int64 block hashes SGLang publishes for these tokens (partial last page included)."""
    return [digest_to_int64(d) for d in page_digests(token_ids, page_size, prior_digest)]


def full_page_hashes(token_ids: Sequence[int], page_size: int) -> list[int]:
    """Block hashes of the whole pages only: what a paged radix tree can hold for this prompt."""
    whole = len(token_ids) - len(token_ids) % page_size
    return page_hashes(token_ids[:whole], page_size)


class LazyPageHashes:
    """The whole-page hashes of one prompt, computed only as far as a lookup reads them.

    A prefix lookup stops at the first page no worker holds, so a request with no cached prefix
    costs one SHA-256 instead of one per page (with SGLang's default page size of 1, one per token).
    """

    __slots__ = ("_data", "_step", "_num_pages", "_hashes", "_prior")

    def __init__(self, token_ids: Sequence[int], page_size: int) -> None:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        self._data = _le_u32(token_ids)
        self._step = page_size * 4
        self._num_pages = len(token_ids) // page_size
        self._hashes: list[int] = []
        self._prior: bytes | None = None

    def __len__(self) -> int:
        return self._num_pages

    def __getitem__(self, index: int) -> int:
        hashes = self._hashes
        while len(hashes) <= index:
            if len(hashes) >= self._num_pages:
                raise IndexError(index)
            start = len(hashes) * self._step
            h = hashlib.sha256(self._prior) if self._prior is not None else hashlib.sha256()
            h.update(self._data[start : start + self._step])
            self._prior = h.digest()
            hashes.append(digest_to_int64(self._prior))
        return hashes[index]

    def __iter__(self) -> Iterator[int]:
        for i in range(self._num_pages):
            yield self[i]
