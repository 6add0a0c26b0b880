"""Which SGLang the worker runs on: the supported releases, and the refusal of any other.

The extension replaces decode-scheduler methods whose bodies change between SGLang releases, so it
starts only on a release it has a contract and an implementation for, and only when the installed
source satisfies that contract. Everything here reads files and metadata; nothing imports sglang.
"""

from __future__ import annotations

from pathlib import Path

from sglang_ppd.worker.contract import CONTRACTS
from sglang_ppd.worker.source_check import first_mismatch

SUPPORTED_SGLANG_VERSIONS: tuple[str, ...] = tuple(CONTRACTS)


class UnsupportedSglangVersion(RuntimeError):
    pass


def refusal_message(found: str | None, differences: str = "") -> str:
    supported = ", ".join(SUPPORTED_SGLANG_VERSIONS)
    what = "is not installed" if found is None else f"{found} is installed"
    return (
        f"sglang_ppd.worker supports sglang {supported} only, but sglang {what}{differences}. "
        f"Install a supported release (pip install 'sglang=={SUPPORTED_SGLANG_VERSIONS[-1]}', or "
        "pip install 'sglang-ppd[sglang]'), or run a stock decode server and route it with the "
        "'pd' policy (no local or deflected prefill)."
    )


def check_installed(found: str | None, root: Path | None) -> str:
    """``found`` when it is supported and the source under ``root`` (the directory holding
    ``sglang/``) satisfies its contract. Otherwise raises, naming what differs: for a supported
    version the first broken entry; for another version the first difference from each contract."""
    if found is None or root is None:
        raise UnsupportedSglangVersion(refusal_message(None))
    if found in CONTRACTS:
        problem = first_mismatch(root, CONTRACTS[found])
        if problem is not None:
            raise UnsupportedSglangVersion(
                f"the installed sglang {found} ({root / 'sglang'}) does not match the adapter's "
                f"contract for {found}: {problem}"
            )
        return found
    diffs = "; ".join(f"vs {v}: {first_mismatch(root, c) or 'no difference'}" for v, c in CONTRACTS.items())
    raise UnsupportedSglangVersion(refusal_message(found, f" (what differs {diffs})"))


def installed_sglang_version() -> str | None:
    """The installed sglang distribution's version, without importing sglang (or torch)."""
    from importlib import metadata

    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None


def installed_sglang_root() -> Path | None:
    """The directory holding the importable ``sglang`` package, found without importing it."""
    from importlib.util import find_spec

    spec = find_spec("sglang")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.parent
