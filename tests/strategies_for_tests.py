"""Strategies the tests load by path (plain backtrader, like a user's)."""

import backtrader as bt


class BuyOnce(bt.Strategy):
    """Buys at the first bar (the sizer decides how much) and holds."""

    def next(self):
        if len(self) == 1:
            self.buy()


class BuyOwnSize(bt.Strategy):
    """Buys 0.05 units at the first bar (its own size, whatever the sizer) and holds."""

    def next(self):
        if len(self) == 1:
            self.buy(size=0.05)
