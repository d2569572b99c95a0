"""The value benchmark (search.bench.value) is built up part by part over several sittings: these
check that what one sitting leaves in the results folder is combined into the table the docs show,
and that a bad part name is refused before anything runs. The parts themselves train for hours and
are run by hand (docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.bench import value


def _result(out: Path, part: str, seed: int, test: float, wall: float, budget: float = 12.0) -> None:
    payload = {"part": part, "what": value.PARTS[part], "seed": seed, "budget_min": budget, "test_accuracy": test,
               "wall_s": wall, "load_avg_1m_after": 1.5,
               "machine": {"cpu_capability": "AVX2", "native_bf16": False, "load_avg_1m": 1.0 + seed}}
    value.result_file(out, part, budget, seed).write_text(json.dumps(payload))


def test_combine_gives_median_and_spread_per_part_and_budget(tmp_path: Path) -> None:
    for seed, test, wall in [(0, 0.921, 700.0), (1, 0.930, 730.0), (2, 0.925, 690.0)]:
        _result(tmp_path, "a", seed, test, wall)
    _result(tmp_path, "b", 0, 0.927, 715.0)
    _result(tmp_path, "a", 0, 0.935, 2150.0, budget=36.0)
    rows = value.combine(tmp_path)
    by = {(r["budget_min"], r["part"]): r for r in rows}
    assert set(by) == {(12.0, "a"), (12.0, "b"), (36.0, "a")}
    a = by[(12.0, "a")]
    assert (a["test_median"], a["test_min"], a["test_max"]) == (0.925, 0.921, 0.930)
    assert (a["wall_median_s"], a["seeds"], a["load_max"]) == (700.0, [0, 1, 2], 3.0)
    assert json.loads((tmp_path / "value.json").read_text()) == rows
    table = value.markdown(rows).splitlines()
    assert "| 12 min | a: hpsearch default study | 3 | 92.50% [92.10-93.00] | 11.7 min [11.5-12.2] |" in table[2]
    assert "AVX2, native bf16 False" in table[2]


@pytest.mark.parametrize("parts", ["a,e", "A"])
def test_an_unknown_part_is_refused_before_anything_runs(tmp_path: Path, parts: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert value.main(["--out", str(tmp_path / "out"), "--parts", parts]) == 2
    assert "unknown part" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.json"))
