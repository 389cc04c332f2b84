"""Dollar-cost averaging into a long: buy in equal legs at a fixed interval, take profit on the
whole position. Plain backtrader; leg sizes come from the cerebro's sizer."""

import backtrader as bt


class Dca(bt.Strategy):
    """Every ``every`` bars, while fewer than ``legs`` legs are held, buy one more leg; close the
    whole position when the close is ``take_profit`` above its average entry price.

    Each leg is the sizer's size split over the legs still to buy (``getsizing() / legs left``),
    so ``legs`` legs use about what the sizer would have used at once.
    """

    params = dict(
        every=24,           # bars between legs
        legs=5,             # most legs held at once
        take_profit=0.03,   # close all at average entry x (1 + take_profit)
    )

    def __init__(self):
        self.held_legs = 0
        self.order = None
        self.last_leg = None

    def notify_order(self, order):
        if self.order is None or order.ref != self.order.ref or order.alive():   # notified orders are copies
            return
        self.order = None
        if order.status == order.Completed:
            self.held_legs = self.held_legs + 1 if order.isbuy() else 0

    def next(self):
        if self.order is not None:
            return
        if not self.position:
            self.held_legs = 0          # also after a liquidation
        elif self.data.close[0] >= self.position.price * (1 + self.p.take_profit):
            self.order = self.close()
            return
        due = self.last_leg is None or len(self) - self.last_leg >= self.p.every
        if due and self.held_legs < self.p.legs:
            size = self.getsizing(isbuy=True) / (self.p.legs - self.held_legs)
            if size > 0:
                self.order = self.buy(size=size)
                self.last_leg = len(self)
