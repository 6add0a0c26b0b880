"""The bench's reading of a router's /stats and /metrics: untrusted text, so garbage is dropped."""

from __future__ import annotations

import pytest

from sglang_ppd.bench.endpoint import RouterView, kv_bytes_during, parse_kv_counters, parse_policy

GOOD = "sglang_ppd_kv_bytes_transferred_total 10\nsglang_ppd_kv_bytes_avoided_total 2.5e3\n"


def test_counters_parse() -> None:
    assert parse_kv_counters("# HELP x\n" + GOOD) == {"transferred": 10, "avoided": 2500}


@pytest.mark.parametrize(
    "body",
    [None, "", "sglang_ppd_kv_bytes_transferred_total 10\n", GOOD.replace("10", "nan"),
     GOOD.replace("10", "-1"), GOOD.replace("10", "1e30"), GOOD.replace("10", "ten")],
)  # fmt: skip
def test_bad_counters_are_unknown(body: str | None) -> None:
    assert parse_kv_counters(body) is None


@pytest.mark.parametrize(
    ("body", "policy"),
    [('{"policy": "ppd_deflect"}', "ppd_deflect"), ('{"policy": 3}', None), ("[1]", None), ("{", None),
     ('{"policy": "x\\u001b[2J"}', None), ('{"policy": "' + "p" * 65 + '"}', None), (None, None)],
)  # fmt: skip
def test_policy_must_be_a_short_name(body: str | None, policy: str | None) -> None:
    assert parse_policy(body) == policy


def test_a_counter_that_went_down_is_unknown() -> None:
    before = RouterView(kv_bytes={"transferred": 100, "avoided": 5})
    after = RouterView(kv_bytes={"transferred": 40, "avoided": 9})
    assert kv_bytes_during(before, after) == {"transferred": None, "avoided": 4}
    assert kv_bytes_during(RouterView(), after) == {"transferred": None, "avoided": None}
