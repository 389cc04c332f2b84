"""EquityCurve: the account value at each bar, for drawdowns, Sharpe ratios and plots."""

from __future__ import annotations

import array

import backtrader as bt
import numpy as np

from .feed import BT_EPOCH


class EquityCurve(bt.Analyzer):
    """``get_analysis()``: ``time`` (int64 ms since 1970, UTC, each bar's open time) and ``equity``
    (``broker.getvalue()`` after the bar: with btperp's broker the wallet plus the unrealized PnL at
    the mark close) as numpy arrays; ``trades``: the number of trades closed (liquidations
    included)."""

    def start(self):
        self._times = array.array("d")
        self._values = array.array("d")
        self.rets["trades"] = 0

    def notify_trade(self, trade):
        if trade.isclosed:
            self.rets["trades"] += 1

    def next(self):
        self._times.append(self.strategy.datetime[0])
        self._values.append(self.strategy.broker.getvalue())

    def stop(self):
        days = np.frombuffer(self._times, dtype=float)
        self.rets["time"] = np.round((days - BT_EPOCH) * 86_400_000).astype(np.int64)
        self.rets["equity"] = np.frombuffer(self._values, dtype=float).copy()
        self._times = self._values = None

    def get_analysis(self):
        return self.rets
