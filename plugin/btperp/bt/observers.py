"""Liquidations on backtrader's plot: a marker at the fill price of each liquidation.

``btperp.install`` adds it for every feed when the cerebro keeps backtrader's standard observers
(``stdstats=True``, the default), next to backtrader's buy/sell markers; ``cerebro.plot()`` then
shows where positions were liquidated. Headless runs save the figure with
:func:`btperp.bt.plot.save_plot`.
"""

from __future__ import annotations

import backtrader as bt


class Liquidations(bt.observer.Observer):
    """Marks the liquidation fills of its data: ``long`` (a long was liquidated), ``short``, and
    the partial steps that reduced one first (``partial_long``, ``partial_short``; one marker per
    bar and line: the bar's last)."""

    lines = ("long", "short", "partial_long", "partial_short")
    plotinfo = dict(plot=True, subplot=False, plotlinelabels=True)
    plotlines = dict(
        long=dict(marker="X", markersize=11.0, color="black", fillstyle="full", ls=""),
        short=dict(marker="X", markersize=11.0, color="darkred", fillstyle="full", ls=""),
        partial_long=dict(marker="x", markersize=9.0, color="black", ls=""),
        partial_short=dict(marker="x", markersize=9.0, color="darkred", ls=""),
    )

    def next(self):
        for order in self._owner._orderspending:
            if order.data is not self.data or not order.info.get("liquidation"):
                continue
            if order.status != order.Completed:
                continue
            # a liquidation sells a long and buys back a short
            if order.info.get("partial"):
                line = self.lines.partial_long if order.issell() else self.lines.partial_short
            else:
                line = self.lines.long if order.issell() else self.lines.short
            line[0] = order.executed.price
