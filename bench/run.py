"""``make bench``: every benchmark prints ``name: value`` and all land in bench/results.json.

Speed targets live here, never in the tests. Each figure is measured on this machine, now.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RESULTS = HERE / "results.json"


def timeit(fn, *, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``repeat`` runs of ``number`` calls, seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def bench_margin() -> dict:
    from btperp.margin import evaluate, make_position
    from btperp.io.tierfile import TierHistoryFile

    table = TierHistoryFile.bundled("binance-usdm").history("BTCUSDT").versions[-1][1]
    pos = make_position("BTC/USDT:USDT", "long", 3.0, 60_000, leverage=20, tiers=table)
    seconds = timeit(lambda: evaluate("binance-usdm", [pos]), number=2000)
    return {"liquidation_price_isolated_us": round(seconds * 1e6, 2)}


BENCHMARKS = [bench_margin]


def main() -> int:
    selected = set(sys.argv[1:])
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for bench in BENCHMARKS:
        if selected and bench.__name__ not in selected:
            continue
        figures = bench()
        for name, value in figures.items():
            print(f"{name}: {value}", flush=True)
        results.update(figures)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
