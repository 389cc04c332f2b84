"""Performance figures of an equity curve: total return, CAGR, maximum drawdown, Sharpe ratio.

Pure core: numpy only. Crypto perpetuals trade every day of the year, so returns are annualized
over 365 days (not 252 trading days). The definitions are the usual ones:

- total return = final / initial equity − 1;
- CAGR = (final / initial) ** (365.25 days / elapsed) − 1 (−100 % once the equity is gone);
- maximum drawdown = the largest fall from a running peak, as a fraction of that peak;
- Sharpe ratio = mean / standard deviation (ddof 1) of the daily returns × √365, risk-free rate 0,
  on the equity at each UTC day's last bar (W. F. Sharpe, "The Sharpe Ratio", 1994).
"""

from __future__ import annotations

import math

import numpy as np

DAY_MS = 86_400_000
YEAR_DAYS = 365.25


def max_drawdown(equity) -> float:
    """Largest peak-to-trough fall of ``equity`` as a fraction of the peak (0 if it never falls)."""
    values = np.asarray(equity, dtype=float)
    if values.size == 0:
        return 0.0
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        falls = np.where(peaks > 0, 1.0 - values / peaks, 0.0)
    return float(min(max(falls.max(), 0.0), 1.0))


def daily_returns(times_ms, equity) -> np.ndarray:
    """Returns from one UTC day's last equity to the next (days with a bar only)."""
    times = np.asarray(times_ms, dtype=np.int64)
    values = np.asarray(equity, dtype=float)
    if values.size < 2:
        return np.empty(0)
    day = times // DAY_MS
    last_of_day = np.r_[day[1:] != day[:-1], True]
    closes = values[last_of_day]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = closes[1:] / closes[:-1] - 1.0
    return returns[np.isfinite(returns)]


def sharpe_ratio(times_ms, equity) -> float:
    """Annualized Sharpe ratio of the daily returns (NaN with fewer than two days or no variation)."""
    returns = daily_returns(times_ms, equity)
    if returns.size < 2:
        return math.nan
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(365)) if sd > 0 else math.nan


def cagr(initial: float, final: float, elapsed_ms: float) -> float:
    """Compound annual growth rate over ``elapsed_ms`` milliseconds."""
    if initial <= 0 or elapsed_ms <= 0:
        return math.nan
    if final <= 0:
        return -1.0
    years = elapsed_ms / DAY_MS / YEAR_DAYS
    return float((final / initial) ** (1.0 / years) - 1.0)


def summarize(times_ms, equity, initial: float) -> dict[str, float]:
    """``final_value``, ``total_return``, ``cagr``, ``max_drawdown``, ``sharpe`` of a curve that
    starts from ``initial`` (the deposit, before the first bar)."""
    times = np.asarray(times_ms, dtype=np.int64)
    values = np.asarray(equity, dtype=float)
    final = float(values[-1]) if values.size else float(initial)
    curve = np.r_[initial, values]
    elapsed = float(times[-1] - times[0]) if times.size > 1 else 0.0
    return {
        "final_value": final,
        "total_return": final / initial - 1.0 if initial > 0 else math.nan,
        "cagr": cagr(initial, final, elapsed),
        "max_drawdown": max_drawdown(curve),
        "sharpe": sharpe_ratio(times, values),
    }
