"""The worker's command line, version pins and import hygiene (no sglang/torch needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_ppd.worker import options, versions


def test_split_args_separates_ppd_options_in_both_spellings() -> None:
    argv = ["--model-path", "/m", "--ppd-tbt-slo-ms", "50", "--port", "30001", "--ppd-iter-log=/tmp/x"]
    ppd, rest = options.split_args(argv)
    assert ppd == ["--ppd-tbt-slo-ms", "50", "--ppd-iter-log=/tmp/x"]
    assert rest == ["--model-path", "/m", "--port", "30001"]


def test_split_args_rejects_a_dangling_ppd_option() -> None:
    with pytest.raises(SystemExit):
        options.split_args(["--ppd-tbt-slo-ms"])


def test_parse_adds_the_decode_radix_cache_and_derives_defaults() -> None:
    argv = ["--disaggregation-mode", "decode", "--host", "127.0.0.1", "--port", "30200"]
    opts, rest = options.parse([*argv, "--ppd-tbt-slo-ms", "40"])
    assert options.RADIX_FLAG in rest
    assert opts.tbt_slo_ms == 40.0
    assert opts.telemetry_endpoint == "tcp://127.0.0.1:30300"
    assert opts.worker_url == "http://127.0.0.1:30200"


@pytest.mark.parametrize(("host", "endpoint"), [(None, "tcp://127.0.0.1:30100"), ("0.0.0.0", "tcp://*:30100")])
def test_telemetry_binds_like_the_http_server(host: str | None, endpoint: str) -> None:
    argv = ["--disaggregation-mode", "decode", *(["--host", host] if host else [])]
    opts, _ = options.parse(argv)
    assert opts.telemetry_endpoint == endpoint


def test_parse_keeps_an_explicit_radix_flag_once() -> None:
    _, rest = options.parse(["--disaggregation-mode=decode", options.RADIX_FLAG])
    assert rest.count(options.RADIX_FLAG) == 1


def test_parse_refuses_0_5_23_s_runtime_role_switch() -> None:
    for flag in (["--enable-pd-role-switch"], ["--enable-pd-role-switch=true"]):
        with pytest.raises(SystemExit, match="enable-pd-role-switch"):
            options.parse(["--disaggregation-mode", "decode", *flag])


@pytest.mark.parametrize("argv", [[], ["--disaggregation-mode", "prefill"]])
def test_parse_refuses_anything_but_a_decode_server(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="decode"):
        options.parse(argv)


def test_parse_rejects_unknown_ppd_options_and_bad_chunk_bounds() -> None:
    with pytest.raises(SystemExit):
        options.parse(["--disaggregation-mode", "decode", "--ppd-no-such-option", "1"])
    with pytest.raises(SystemExit):
        options.parse(
            ["--disaggregation-mode", "decode", "--ppd-min-chunk-len", "512", "--ppd-max-chunk-len", "64"]
        )


def test_options_round_trip_through_the_environment() -> None:
    opts, _ = options.parse(["--disaggregation-mode", "decode", "--ppd-min-chunk-len", "32"])
    assert options.PpdOptions.from_env({options.ENV_VAR: opts.to_env()}) == opts
    assert options.PpdOptions.from_env({}) == options.PpdOptions()


def test_the_version_check_refuses_a_missing_sglang_and_names_the_supported_ones(tmp_path: Path) -> None:
    assert versions.SUPPORTED_SGLANG_VERSIONS == ("0.5.17", "0.5.23")
    with pytest.raises(versions.UnsupportedSglangVersion, match="supports sglang 0.5.17, 0.5.23 only"):
        versions.check_installed(None, None)
    # A supported version string over a tree without its source is refused, naming the first gap.
    with pytest.raises(versions.UnsupportedSglangVersion, match="class sglang.srt.managers.scheduler"):
        versions.check_installed("0.5.23", tmp_path)
    assert "0.5.18 is installed" in versions.refusal_message("0.5.18")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=os.environ)


def test_seam_modules_import_neither_sglang_nor_torch() -> None:
    code = (
        "import sys\n"
        "import sglang_ppd.worker.__main__, sglang_ppd.worker.sglang_ext, sglang_ppd.worker.http_mw\n"
        "import sglang_ppd.worker.telemetry_pub, sglang_ppd.worker.admission, sglang_ppd.worker.budget\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sglang', 'torch')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_worker_entry_point_refuses_an_unsupported_or_missing_sglang() -> None:
    installed = versions.installed_sglang_version()
    if installed in versions.SUPPORTED_SGLANG_VERSIONS:
        pytest.skip("a supported sglang is installed here; the refusal path is not reachable")
    r = subprocess.run(
        [sys.executable, "-m", "sglang_ppd.worker", "--disaggregation-mode", "decode", "--model-path", "/x"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    assert "supports sglang 0.5.17, 0.5.23 only" in r.stderr
