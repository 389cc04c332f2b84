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


class MarginSizer(bt.Sizer):
    """Puts ``percents`` % of the available balance up as initial margin (and opening fee), so the
    position's notional is about ``percents`` % × balance × leverage, within the notional the
    tier table allows at that leverage (:meth:`PerpBroker.max_open_size`).

    The sizer of ``btperp run`` and ``btperp compare``: the same strategy at 10x holds ten times
    the exposure it holds at 1x. Strategies that size their own orders are unaffected.

    An order below ``min_notional`` USDT is not placed (size 0): Binance USDⓈ-M refuses orders
    under 5 USDT of notional on most symbols, so a wiped-out account stops trading instead of
    trading dust. Coin-margined: ``min_notional`` USD of face value (contracts × contract size).
    """

    params = (("percents", 95.0), ("min_notional", 5.0))

    def _getsizing(self, comminfo, cash, data, isbuy):
        max_open = getattr(self.broker, "max_open_size", None)
        if max_open is None:
            raise TypeError("MarginSizer sizes with a PerpBroker: use btperp.install(cerebro, ...)")
        size = max_open(data, isbuy=isbuy, fraction=self.p.percents / 100.0)
        mirror = self.broker.mirror(data) if hasattr(self.broker, "mirror") else None
        # the order's notional in the quote currency (coin-margined: contracts × contract size, USD)
        notional = size * (data.close[0] if mirror is None else mirror.contract_size)
        return size if notional >= self.p.min_notional else 0.0
