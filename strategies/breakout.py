"""A Donchian channel breakout traded with stop orders (the "turtle" entry and exit). Plain backtrader."""

import backtrader as bt


class Breakout(bt.Strategy):
    """Enter on a break of the ``entry``-bar high (long) or low (short) with stop orders; leave on a
    break of the ``exit``-bar channel on the other side, again with a stop order.

    While flat, a buy stop above the channel and a sell stop below it wait together (one cancels
    the other); both are re-placed every bar as the channel moves. While in a position, one stop
    order at the exit channel protects it and follows the channel. (``buy``/``sell`` return None
    when the sizer gives no size.)
    """

    params = dict(
        entry=55,       # bars of the entry channel
        exit=20,        # bars of the exit channel
        short=True,     # also trade downside breakouts
    )

    def __init__(self):
        # the channel of the bars before this one: a stop at it triggers on a new extreme
        self.entry_high = bt.ind.Highest(self.data.high(-1), period=self.p.entry)
        self.entry_low = bt.ind.Lowest(self.data.low(-1), period=self.p.entry)
        self.exit_high = bt.ind.Highest(self.data.high(-1), period=self.p.exit)
        self.exit_low = bt.ind.Lowest(self.data.low(-1), period=self.p.exit)
        self.waiting = []

    def _cancel_waiting(self):
        for order in self.waiting:
            if order is not None and order.alive():
                self.cancel(order)
        self.waiting = []

    def next(self):
        self._cancel_waiting()
        size = self.position.size
        if size > 0:
            self.waiting = [self.sell(exectype=bt.Order.Stop, price=self.exit_low[0], size=size)]
        elif size < 0:
            self.waiting = [self.buy(exectype=bt.Order.Stop, price=self.exit_high[0], size=-size)]
        else:
            long_entry = self.buy(exectype=bt.Order.Stop, price=self.entry_high[0])
            self.waiting = [long_entry]
            if self.p.short:
                self.waiting.append(self.sell(exectype=bt.Order.Stop, price=self.entry_low[0],
                                              oco=long_entry))
