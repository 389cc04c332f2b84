"""An SMA crossover that is always in the market: long while the fast average is above the slow
one, short while it is below. Plain backtrader; sizes come from the cerebro's sizer."""

import backtrader as bt


class SmaLongShort(bt.Strategy):
    """Long above, short below the slow SMA (``short=False``: flat below, as the documented SmaCross).

    A reversal closes the position first and opens the other side once the close has filled (the
    next bar), so the new side is sized on the balance the close released.
    """

    params = dict(
        fast=10,      # period of the fast moving average
        slow=30,      # period of the slow moving average
        short=True,   # go short below the slow average (False: stay flat)
    )

    def __init__(self):
        self.fast_ma = bt.ind.SMA(period=self.p.fast)
        self.slow_ma = bt.ind.SMA(period=self.p.slow)
        self.order = None

    def notify_order(self, order):
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected, order.Expired):
            if self.order is not None and order.ref == self.order.ref:   # notified orders are copies
                self.order = None

    def next(self):
        if self.order is not None:
            return
        want = 1 if self.fast_ma[0] > self.slow_ma[0] else (-1 if self.p.short else 0)
        have = (self.position.size > 0) - (self.position.size < 0)
        if have and have != want:
            self.order = self.close()
        elif not have and want > 0:
            self.order = self.buy()
        elif not have and want < 0:
            self.order = self.sell()
