"""Helpers for the broker tests: synthetic btperp frames and small strategies."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd

from btperp.bt.feed import feed_from_frame
from btperp.tiers import Tier, TierTable


def make_frame(close, *, open=None, high=None, low=None, mark_open=None, mark_high=None,
               mark_low=None, mark_close=None, funding=None, funding_later=None, start="2024-01-01",
               timeframe="1h", symbol="TEST/USDT:USDT", exchange="binance-usdm") -> pd.DataFrame:
    """A frame shaped like ``btperp.load``'s. Marks default to the last prices; ``funding`` maps a
    bar index to the rate of one event at that bar's open (paid on its mark open), ``funding_later``
    to one later in the bar (paid on its mark close)."""
    close = np.asarray(close, float)
    n = len(close)
    open = np.r_[close[0], close[:-1]] if open is None else np.asarray(open, float)
    high = np.maximum(open, close) if high is None else np.asarray(high, float)
    low = np.minimum(open, close) if low is None else np.asarray(low, float)
    mo = open.copy() if mark_open is None else np.asarray(mark_open, float)
    mc = close.copy() if mark_close is None else np.asarray(mark_close, float)
    mh = np.maximum(mo, mc) if mark_high is None else np.asarray(mark_high, float)
    ml = np.minimum(mo, mc) if mark_low is None else np.asarray(mark_low, float)
    index = pd.date_range(start, periods=n, freq=pd.Timedelta(timeframe), tz="UTC", name="time")
    rate, at_open, later = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i, r in (funding or {}).items():
        rate[i], at_open[i] = r, r * mo[i]
    for i, r in (funding_later or {}).items():
        rate[i] = np.nansum([rate[i], r])
        later[i] = r * mc[i]
    has = ~np.isnan(rate)
    events = (~np.isnan(at_open)).astype(np.int64) + (~np.isnan(later))
    frame = pd.DataFrame({
        "open": open, "high": high, "low": low, "close": close, "volume": np.ones(n),
        "mark_open": mo, "mark_high": mh, "mark_low": ml, "mark_close": mc,
        "funding_rate": rate,
        "funding_time": pd.Series(index.where(has), index=index).astype("datetime64[ms, UTC]").to_numpy(),
        "funding_events": events,
        "funding_per_unit": np.where(has, np.nan_to_num(at_open) + np.nan_to_num(later), np.nan),
        "funding_open_per_unit": at_open,
    }, index=index)
    frame.attrs.update(symbol=symbol, exchange=exchange, timeframe=timeframe)
    return frame


def random_market(rng, n, *, vol, jump_chance=0.05, jump_sd=0.25, wick_sd=0.01, later_share=5,
                  symbol="TEST/USDT:USDT") -> pd.DataFrame:
    """``n`` bars of a random walk from 100 (steps of ``vol``) with gaps at the open (jumps, some past
    bankruptcy), wicks, a mark inside the last price's wicks at a small basis, funding events at a
    quarter of the opens and later in a ``1/later_share`` of the bars."""
    steps = rng.normal(0, vol, n)
    jumps = rng.random(n) < jump_chance
    steps[jumps] += rng.normal(0, jump_sd, jumps.sum())
    close = 100 * np.exp(np.cumsum(steps))
    open_ = np.r_[100.0, close[:-1]] * np.exp(np.where(jumps, steps, 0) * 0.5)
    wick = np.abs(rng.normal(0, wick_sd, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    basis = 1 + rng.normal(0, 0.002, n)
    mo, mc = open_ * basis, close * basis
    mh = np.maximum(np.maximum(mo, mc), high * basis * (1 - wick[0] / 2))
    ml = np.minimum(np.minimum(mo, mc), low * basis * (1 + wick[1] / 2))
    funding = {int(i): float(rng.normal(0.0001, 0.002)) for i in rng.choice(n, n // 4, replace=False)}
    later = {int(i): float(rng.normal(0.0001, 0.002))
             for i in rng.choice(n, n // later_share, replace=False)}
    return make_frame(close, open=open_, high=high, low=low, mark_open=mo, mark_high=mh, mark_low=ml,
                      mark_close=mc, funding=funding, funding_later=later, symbol=symbol)


def feed(frame, **kwargs):
    return feed_from_frame(frame, **kwargs)


def table(*rows) -> TierTable:
    """Tiers from (min_notional, max_notional, mmr, max_leverage) rows; amounts derived."""
    tiers, cum = [], 0.0
    for i, (lo, hi, mmr, lev) in enumerate(rows):
        if i:
            cum += lo * (mmr - rows[i - 1][2])
        tiers.append(Tier(i + 1, float(lo), float(hi), float(mmr), float(lev), cum))
    return TierTable(tiers, symbol="TEST/USDT:USDT", source="test")


#: One tier: 0.5 % maintenance margin, up to 100x.
FLAT = table((0, float("inf"), 0.005, 100))


class Script(bt.Strategy):
    """Sends the orders of ``plan`` ({bar index: [(method, kwargs), ...]}) and records everything."""

    params = (("plan", None),)

    def __init__(self):
        self.orders, self.trades, self.calls, self.bars = [], [], [], []

    def next(self):
        for method, kwargs in (self.p.plan or {}).get(len(self) - 1, []):
            getattr(self, method)(**kwargs)

    def notify_order(self, order):
        if order.status in (order.Completed, order.Margin, order.Rejected, order.Canceled):
            self.orders.append((self.data.datetime.datetime(0), order.getstatusname(), order.executed.size,
                                order.executed.price, order.executed.pnl, order.executed.comm,
                                dict(order.info)))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades.append((trade.pnl, trade.pnlcomm))

    def notify_margin_call(self, event):
        self.calls.append(event)


def run(frames, plan=None, *, strategy=Script, cerebro_kwargs=None, **broker):
    """Run ``strategy`` on ``frames`` (one frame or a list) with a PerpBroker; returns (strat, broker)."""
    import btperp
    cerebro = bt.Cerebro(stdstats=False, **(cerebro_kwargs or {}))
    for f in frames if isinstance(frames, list) else [frames]:
        cerebro.adddata(feed(f))
    if issubclass(strategy, Script):
        cerebro.addstrategy(strategy, plan=plan)
    else:
        cerebro.addstrategy(strategy)
    broker.setdefault("tiers", FLAT)
    b = btperp.install(cerebro, **broker)
    strat = cerebro.run()[0]
    return strat, b
