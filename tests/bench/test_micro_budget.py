"""The microbench table reports the microseconds storekit adds beside its budget."""

from __future__ import annotations

import json
from pathlib import Path

from bench.investigations import micro


def _bench(op: str, backend: str, client: str, median_s: float) -> dict[str, object]:
    return {"extra_info": {"operation": op, "backend": backend, "client": client},
            "stats": {"median": median_s}}


def test_added_microseconds_and_budget(tmp_path: Path) -> None:
    rows = []
    for op, sk, raw in (("empty_transaction", 9e-6, 6e-6), ("insert_100_tx", 250e-6, 150e-6),
                        ("search", 3.2e-3, 3.0e-3)):
        rows += [_bench(op, "sqlite", "storekit", sk), _bench(op, "sqlite", "raw", raw),
                 _bench(op, "sqlite", "sqlalchemy", sk * 2)]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"benchmarks": rows}))
    frame = micro.ratios(path).set_index("operation")
    assert round(frame.loc["empty_transaction", "added_us"], 6) == 3.0
    assert frame.loc["empty_transaction", "budget_us"] == 2.0  # 0 statements + 1 transaction
    assert not frame.loc["empty_transaction", "within_budget"]
    assert frame.loc["insert_100_tx", "budget_us"] == 102.0  # 100 statements + 1 transaction
    assert frame.loc["insert_100_tx", "within_budget"]
    assert round(frame.loc["search", "budget_us"], 6) == 300.0  # 10% of the raw 3 ms
    assert frame.loc["search", "within_budget"]
