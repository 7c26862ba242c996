"""The metrics against small golden files (tests/golden/metrics/*.json): inputs, expected values
and the arithmetic by hand, so a changed definition shows up as a changed file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from llm_recommender import metrics

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "metrics"


def golden_cases() -> list[Any]:
    out = []
    for path in sorted(GOLDEN.glob("*.json")):
        for case in json.loads(path.read_text())["cases"]:
            out.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return out


def same(got: Any, want: Any) -> bool:
    if want == "nan":
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, dict):
        return set(got) == set(want) and all(same(got[k], v) for k, v in want.items())
    if isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        return got == pytest.approx(want, rel=1e-12, abs=1e-12)
    return got == want


def test_golden_files_exist():
    assert len(golden_cases()) >= 20


@pytest.mark.parametrize("case", golden_cases())
def test_metric_matches_golden_file(case):
    fn = getattr(metrics, case["metric"])
    got = fn(*case["args"], **case["kwargs"])
    if isinstance(got, list):
        got = [b.to_dict() for b in got]
    assert same(got, case["expected"]), f"{case['metric']}: got {got}, expected {case['expected']} ({case['why']})"
