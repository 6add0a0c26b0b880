"""The adapter's contract against the released SGLang wheels' sources (CPU only, no torch).

``sglang_sources`` downloads each wheel (``pip download --no-deps``, cached) and unpacks its Python
files; the install check parses them with ``ast``. This is what catches an SGLang release changing a
name or signature the worker relies on, before any GPU run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_ppd.worker import versions
from sglang_ppd.worker.contract import CONTRACTS, Contract, Method
from sglang_ppd.worker.source_check import ContractMismatch, canonical_signature, check_source


@pytest.mark.slow
@pytest.mark.parametrize("version", tuple(CONTRACTS))
def test_each_supported_release_satisfies_its_contract(version: str, sglang_sources: dict[str, Path]) -> None:
    check_source(sglang_sources[version], CONTRACTS[version])
    assert versions.check_installed(version, sglang_sources[version]) == version


@pytest.mark.slow
def test_the_check_names_the_first_entry_a_release_breaks(sglang_sources: dict[str, Path]) -> None:
    # 0.5.17's source against 0.5.23's contract: the first 0.5.23-only entry differs.
    with pytest.raises(ContractMismatch) as exc:
        check_source(sglang_sources["0.5.17"], CONTRACTS["0.5.23"])
    assert str(exc.value) == (
        "Scheduler.get_num_allocatable_reqs(self, running_bs) differs from the expected "
        "Scheduler.get_num_allocatable_reqs(self, running_bs, beam_width=, running_batch=, num_held_rows=)"
    )
    # A supported version whose installed source was changed is refused too, naming the entry.
    broken = Contract("0.5.17", (Method("sglang.srt.managers.scheduler", "Scheduler", "run_batch", "self"),))
    with pytest.raises(ContractMismatch, match=r"Scheduler.run_batch\(self, batch, .*\) differs"):
        check_source(sglang_sources["0.5.17"], broken)


@pytest.mark.slow
def test_0_5_20_is_refused_naming_what_differs(sglang_sources: dict[str, Path]) -> None:
    with pytest.raises(versions.UnsupportedSglangVersion) as exc:
        versions.check_installed("0.5.20", sglang_sources["0.5.20"])
    msg = str(exc.value)
    assert "0.5.20 is installed" in msg
    found = "Scheduler.get_num_allocatable_reqs(self, running_bs, beam_width=, running_batch=)"
    assert f"vs 0.5.17: {found}" in msg
    assert "vs 0.5.23: Scheduler.get_num_allocatable_reqs(" in msg


def _worker(source: Path) -> subprocess.CompletedProcess[str]:
    """``python -m sglang_ppd.worker`` with only that release's unpacked source importable."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "sglang_ppd.worker", "--disaggregation-mode", "decode"]
    argv += ["--model-path", "/x"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("version", tuple(CONTRACTS))
def test_the_worker_passes_its_install_check_on_each_supported_release(
    version: str, sglang_sources: dict[str, Path]
) -> None:
    r = _worker(sglang_sources[version])
    assert f"sglang {version} satisfies the adapter contract; launching" in r.stderr, r.stderr
    # Without SGLang's own dependencies (torch, ...) the launch then stops at importing sglang: the
    # rest of the start needs a GPU machine.
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


@pytest.mark.slow
def test_the_worker_refuses_0_5_20_by_name(sglang_sources: dict[str, Path]) -> None:
    r = _worker(sglang_sources["0.5.20"])
    assert r.returncode == 2, r.stderr
    assert "sglang 0.5.20 is installed" in r.stderr and "get_num_allocatable_reqs" in r.stderr


def test_the_runtime_signature_form_matches_the_source_form() -> None:
    def f(self, req, is_retracted=False, *args, key=None, **kwargs):  # type: ignore[no-untyped-def]  # noqa: ANN001
        return None

    def g(self, a, *, b, c=1):  # type: ignore[no-untyped-def]  # noqa: ANN001
        return None

    assert canonical_signature(f) == "self, req, is_retracted=, *args, key=, **kwargs"
    assert canonical_signature(g) == "self, a, *, b, c="
