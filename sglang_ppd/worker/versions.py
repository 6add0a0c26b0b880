"""The SGLang releases the scheduler extension was written and checked against.

The extension replaces a handful of decode-scheduler methods whose bodies change between SGLang
releases, so it refuses to start on any other version instead of breaking silently.
"""

from __future__ import annotations

SUPPORTED_SGLANG_VERSIONS: tuple[str, ...] = ("0.5.17",)


class UnsupportedSglangVersion(RuntimeError):
    pass


def refusal_message(found: str | None) -> str:
    supported = ", ".join(SUPPORTED_SGLANG_VERSIONS)
    what = "is not installed" if found is None else f"{found} is installed"
    return (
        f"sglang_ppd.worker supports sglang {supported} only, but sglang {what}. "
        f"Install a supported release (pip install 'sglang=={SUPPORTED_SGLANG_VERSIONS[-1]}', or "
        "pip install 'sglang-ppd[sglang]'), or run a stock decode server and route it with the "
        "'pd' policy (no local or deflected prefill)."
    )


def check_version(found: str | None) -> str:
    """Returns ``found`` when supported; raises :class:`UnsupportedSglangVersion` otherwise."""
    if found is None or found not in SUPPORTED_SGLANG_VERSIONS:
        raise UnsupportedSglangVersion(refusal_message(found))
    return found


def installed_sglang_version() -> str | None:
    """The installed sglang distribution's version, without importing sglang (or torch)."""
    from importlib import metadata

    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None
