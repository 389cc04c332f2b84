"""Liquidation charts: mark and last price around a liquidation, the position's entry, liquidation
and bankruptcy prices, and the funding it paid. PNG, written atomically (matplotlib's object API:
no pyplot state, no screen needed). The report layer: above :mod:`btperp.audit`, which draws
nothing itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..times import to_ms
from ..io.atomic import atomic_path

if TYPE_CHECKING:                        # pragma: no cover
    from ..audit import LiquidationAudit, PositionAudit
    from ..replay import Market


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 7))
    FigureCanvasAgg(fig)
    price, fund = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    import matplotlib.dates as mdates
    locator = mdates.AutoDateLocator()
    fund.xaxis.set_major_locator(locator)
    fund.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return fig, price, fund


def _when(market: "Market", bars: np.ndarray) -> np.ndarray:
    return market.times[bars].astype("datetime64[ms]")


def _prices(ax, market: "Market", lo: int, hi: int) -> None:
    """Mark close line with its high-low band, and the last price's high-low band."""
    bars = np.arange(lo, hi)
    t = _when(market, bars)
    ax.fill_between(t, market.last[2][bars], market.last[1][bars], step="post", color="tab:orange",
                    alpha=0.18, lw=0, label="last price high–low")
    ax.fill_between(t, market.mark[2][bars], market.mark[1][bars], step="post", color="tab:blue",
                    alpha=0.30, lw=0, label="mark price high–low")
    ax.step(t, market.mark[3][bars], where="post", color="tab:blue", lw=1.0, label="mark close")


def _funding(ax, when: np.ndarray, amounts: np.ndarray, step_ms: int) -> None:
    if len(when):
        colors = np.where(amounts >= 0, "tab:red", "tab:green")
        ax.bar(when, amounts, width=np.timedelta64(max(step_ms, 1), "ms"), color=colors, align="edge")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylabel("funding paid, USDT\n(red paid, green received)")
    ax.grid(True, alpha=0.25)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_liquidation(path: "str | os.PathLike[str]", market: "Market", audit: "LiquidationAudit",
                     rows: pd.DataFrame, events: pd.DataFrame, *, bars_before: int = 72,
                     bars_after: int = 24) -> Path:
    """One liquidation of a backtest: its bar, the trade's recorded liquidation price, the funding."""
    t = int(market.index_of([to_ms(audit.time)])[0])
    lo, hi = max(t - bars_before, 0), min(t + bars_after + 1, len(market))
    fig, ax, fund = _figure()
    _prices(ax, market, lo, hi)
    if len(rows):
        when = rows["time"].dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
        keep = (when >= _when(market, np.array([lo]))[0])
        ax.step(when[keep], rows["liquidation_price"].to_numpy(float)[keep], where="post",
                color="tab:red", lw=1.4, label="liquidation price (recorded)")
    at = _when(market, np.array([t]))[0]
    ax.axhline(audit.entry_price, color="grey", ls="--", lw=1, label=f"entry {audit.entry_price:,.2f}")
    if audit.liquidation_price is not None:
        ax.axhline(audit.liquidation_price, color="tab:red", ls=":", lw=1,
                   label=f"liquidation price {audit.liquidation_price:,.2f}")
    ax.axhline(audit.bankruptcy_price, color="black", ls=":", lw=1,
               label=f"bankruptcy price {audit.bankruptcy_price:,.2f}")
    ax.scatter([at], [audit.trigger_price], marker="X", s=120, color="tab:red", zorder=5,
               label=f"liquidated ({audit.trigger} trigger) at {audit.trigger_price:,.2f}")
    if audit.other_time is not None:
        other = np.datetime64(to_ms(audit.other_time), "ms")
        if _when(market, np.array([lo]))[0] <= other <= _when(market, np.array([hi - 1]))[0]:
            ax.axvline(other, color="tab:orange", ls="--", lw=1,
                       label=f"{audit.other_trigger} trigger would fire ({audit.other_verdict})")
    ax.set_title(f"{audit.symbol} {audit.side} {audit.size:g} at {audit.leverage:g}x "
                 f"({audit.margin_mode}), liquidated {audit.time} UTC")
    ax.set_ylabel("price, USDT")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    kinds = events["kind"].astype(str)
    paid = events[kinds == "funding"]
    when = paid["time"].dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    keep = when >= _when(market, np.array([lo]))[0]
    _funding(fund, when[keep], paid["amount"].to_numpy(float)[keep], market.step_ms)
    return _save(fig, Path(path))


def plot_position(path: "str | os.PathLike[str]", audit: "PositionAudit", *,
                  bars_after: int = 24) -> Path:
    """An audited position from entry to liquidation (or the end of the replay)."""
    from ..replay import liquidation_path
    from ..rules import get_rulebook
    market = audit._market
    start, last = audit._bars
    hi = min(last + bars_after + 1, len(market))
    fig, ax, fund = _figure()
    _prices(ax, market, start, hi)
    sgn = 1 if audit.side == "long" else -1
    path_lp = liquidation_path(market, get_rulebook(audit.exchange), sgn, audit.size, audit.entry_price,
                               audit.margin, audit.leverage, start, last + 1)
    bars = np.arange(start, last + 1)
    ax.step(_when(market, bars), path_lp, where="post", color="tab:red", lw=1.4,
            label="liquidation price (after funding)")
    ax.axhline(audit.entry_price, color="grey", ls="--", lw=1, label=f"entry {audit.entry_price:,.2f}")
    if audit.liquidated:
        # at its detail bar's minute when the liquidation bar was replayed on detail bars
        t = (np.datetime64(to_ms(audit.liquidation_time), "ms") if audit.detail
             else _when(market, np.array([last]))[0])
        ax.scatter([t], [audit.trigger_price], marker="X", s=120, color="tab:red", zorder=5,
                   label=f"liquidated ({audit.trigger}) at {audit.trigger_price:,.2f}"
                         + (f", {audit.liquidation_time} UTC" if audit.detail else ""))
        ax.axhline(audit.bankruptcy_price, color="black", ls=":", lw=1,
                   label=f"bankruptcy price {audit.bankruptcy_price:,.2f}")
    if audit.reported_time is not None:
        rep = np.datetime64(to_ms(audit.reported_time), "ms")
        ax.axvline(rep, color="purple", ls="--", lw=1, label=f"reported liquidation ({audit.verdict})")
        if audit.reported_price is not None:
            ax.scatter([rep], [audit.reported_price], marker="o", s=50, color="purple", zorder=5)
    ax.set_title(f"{audit.symbol} {audit.side} {audit.size:g} at {audit.leverage:g}x ({audit.margin_mode}), "
                 f"entry {audit.entry_time} UTC")
    ax.set_ylabel("price, USDT")
    ax.grid(True, alpha=0.25)
    inset = audit._detail is not None and audit.liquidated
    ax.legend(fontsize=8, loc="lower left" if inset else "best")         # the inset: upper right
    if inset:
        _detail_inset(ax, audit, float(path_lp[-1]))
    # funding per bar the position paid (its size times the bar's funding per unit)
    per_bar = np.diff(np.concatenate([[market.baseline(np.array([start]), np.array([True]))[0]],
                                      market.f_after[start:last + 1]]))
    has = per_bar != 0
    _funding(fund, _when(market, bars[has]), sgn * audit.size * per_bar[has], market.step_ms)
    return _save(fig, Path(path))


def _detail_inset(ax, audit: "PositionAudit", lp: float) -> None:
    """The liquidation bar on its detail bars (the trigger series' high–low band and close), with the
    liquidation price and the minute it was reached, in an inset."""
    from matplotlib.dates import DateFormatter
    rows = audit._detail
    o, h, lo, c = (rows[name].to_numpy(float) for name in rows.columns[:4])
    t = rows.index.tz_localize(None).to_numpy().astype("datetime64[ms]")
    inset = ax.inset_axes([0.64, 0.56, 0.34, 0.36])
    inset.fill_between(t, lo, h, step="post", color="tab:blue", alpha=0.3, lw=0)
    inset.step(t, c, where="post", color="tab:blue", lw=0.8)
    inset.axhline(lp, color="tab:red", lw=1)
    inset.scatter([np.datetime64(to_ms(audit.liquidation_time), "ms")], [audit.trigger_price], marker="X",
                  s=60, color="tab:red", zorder=5)
    if audit.reported_time is not None:
        inset.axvline(np.datetime64(to_ms(audit.reported_time), "ms"), color="purple", ls="--", lw=1)
    inset.set_title(f"the liquidation bar on {audit.detail} {audit.trigger} bars", fontsize=7)
    inset.tick_params(labelsize=6)
    inset.xaxis.set_major_formatter(DateFormatter("%H:%M"))


__all__ = ["plot_liquidation", "plot_position"]


def audit_history(root: "str | os.PathLike[str]", *, datadir=None,
                  plots: "str | os.PathLike[str] | None" = None, bars_before: int = 72,
                  bars_after: int = 24) -> list["LiquidationAudit"]:
    """:func:`btperp.audit.audit_history` with one PNG per liquidation in ``plots``."""
    from ..audit import audit_history as explain
    return explain(root, datadir=datadir, plots=plots, bars_before=bars_before, bars_after=bars_after,
                   plotter=plot_liquidation if plots is not None else None)
