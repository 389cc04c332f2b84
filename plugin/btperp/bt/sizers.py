"""backtrader's fixed-stake sizers without the integer rounding (crypto sizes are fractional).

``bt.sizers.FixedSize`` and ``FixedSizeTarget`` round the stake of each tranche with ``int()``:
a stake of 0.5 BTC in two tranches becomes 0. :class:`~btperp.bt.broker.PerpBroker` swaps them for
these classes (same parameters, same behaviour otherwise) when a run starts, so a strategy keeps
its sizer unchanged. ``PercentSizerInt`` and ``AllInSizerInt`` are left alone: they ask for
integers on purpose.
"""

from __future__ import annotations

import backtrader as bt


class FixedSize(bt.sizers.FixedSize):
    """``bt.sizers.FixedSize`` with fractional tranches."""

    def _getsizing(self, comminfo, cash, data, isbuy):
        if self.p.tranches > 1:
            return abs(self.p.stake / self.p.tranches)
        return self.p.stake

    def setsizing(self, stake):
        if self.p.tranches > 1:
            self.p.stake = abs(self.p.stake / self.p.tranches)
        else:
            self.p.stake = stake


class FixedSizeTarget(bt.sizers.FixedSizeTarget):
    """``bt.sizers.FixedSizeTarget`` with fractional tranches."""

    def _getsizing(self, comminfo, cash, data, isbuy):
        if self.p.tranches > 1:
            size = abs(self.p.stake / self.p.tranches)
            return min(self.strategy.position.size + size, self.p.stake)
        return self.p.stake

    def setsizing(self, stake):
        if self.p.tranches > 1:
            size = abs(self.p.stake / self.p.tranches)
            self.p.stake = min(self.strategy.position.size + size, self.p.stake)
        else:
            self.p.stake = stake


#: backtrader sizer class → the fractional one that replaces it.
FRACTIONAL = {bt.sizers.FixedSize: FixedSize, bt.sizers.FixedSizeTarget: FixedSizeTarget}


def make_fractional(strategy: bt.Strategy) -> None:
    """Replace the strategy's sizer by its fractional twin, keeping its parameters."""
    sizer = strategy.getsizer()
    cls = FRACTIONAL.get(type(sizer))
    if cls is None:
        return
    kwargs = {name: getattr(sizer.p, name) for name in sizer.params._getkeys()}
    strategy.setsizer(cls(**kwargs))
