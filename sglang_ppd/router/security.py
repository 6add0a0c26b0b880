"""Secrets: API keys from the environment (not the process list), no secret in any log line, and no
client-chosen string that could forge one (``rid``).

``SGLANG_PPD_API_KEY`` / ``SGLANG_PPD_ADMIN_KEY`` stand in for ``--api-key`` / ``--admin-key`` (a
flag or the YAML wins), so keys need not sit in ``ps`` output or shell history. Every log record
that reaches a root handler passes :class:`RedactingFilter`, which masks the keys and the
credentials of worker URLs (``http://user:password@host``), in the message, its arguments and any
traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from sglang_ppd.router.config import RouterConfig
from sglang_ppd.router.requests import BadRequest

ENV_KEYS = {"api_key": "SGLANG_PPD_API_KEY", "admin_key": "SGLANG_PPD_ADMIN_KEY"}
MASK = "***"
MAX_RID_LEN = 256


def check_rid(rid: str) -> None:
    """A client's ``rid`` reaches upstream bodies and log lines: bounded, printable, one line."""
    if len(rid) > MAX_RID_LEN or not rid.isprintable():
        raise BadRequest(f"rid must be at most {MAX_RID_LEN} printable characters")


def keys_from_env(data: dict[str, Any], env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``data`` (router config fields) with keys filled from the environment where unset."""
    out = dict(data)
    for field, var in ENV_KEYS.items():
        if out.get(field) is None and env.get(var):
            out[field] = env[var]
    return out


def public_url(url: str) -> str:
    """``url`` with any password in its userinfo masked, for API replies (/stats, /workers)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username}:{MASK}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def url_secrets(url: str) -> list[str]:
    """The password of a worker URL, alone and as ``user:password``."""
    parts = urlsplit(url)
    if not parts.password:
        return []
    return [parts.password, *([f"{parts.username}:{parts.password}"] if parts.username else [])]


def secrets_of(cfg: RouterConfig) -> list[str]:
    found = [k for k in (cfg.api_key, cfg.admin_key) if k]
    for w in cfg.workers:
        found += url_secrets(w.url)
    # Longest first, so a secret that contains another is masked whole.
    return sorted(set(found), key=len, reverse=True)


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these too from now on (a worker added at runtime with credentials in its URL)."""
        self.secrets = sorted({*self.secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = self._mask(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        record.exc_info = None
        return True


_installed: list[RedactingFilter] = []


def install_log_redaction(cfg: RouterConfig) -> RedactingFilter:
    """Mask ``cfg``'s secrets in everything the root logger's handlers write."""
    redactor = RedactingFilter(secrets_of(cfg))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    _installed.append(redactor)
    return redactor


def redact_url_secrets(url: str) -> None:
    """A worker URL registered after start-up: its credentials are masked in the log as well."""
    secrets = url_secrets(url)
    for redactor in _installed if secrets else ():
        redactor.add(secrets)
