"""backtrader commission info of a linear perpetual: what backtrader asks of an instrument (margin
per unit, sizes, PnL), with btperp's leverage and lot size; fees are charged by the broker."""

from __future__ import annotations

import math

import backtrader as bt


class PerpCommInfo(bt.CommInfoBase):
    """Linear perpetual: percentage fees on notional, margin = price / leverage, fractional sizes.

    backtrader's own ``leverage`` parameter stays 1 (with another value its futures value is
    wrong); btperp's leverage is ``leverage_setting`` and reaches backtrader through
    :meth:`get_margin`. Fees are charged by :class:`PerpBroker` (maker or taker).
    """

    params = (
        ("stocklike", False),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("commission", 0.0005),
        ("leverage_setting", 1.0),
        ("lot_size", None),
    )

    def get_margin(self, price):
        """Initial margin of one unit at ``price``."""
        # Binance "Leverage and Margin of USDⓈ-M Futures": initial margin = notional / leverage.
        return price / self.p.leverage_setting

    def getsize(self, price, cash):
        """Units whose notional is ``cash`` at ``price``, down to the lot size (not to integers)."""
        return self.to_lots(cash / price)

    def to_lots(self, size):
        """``size`` rounded down to the lot size (unchanged without one)."""
        lot = self.p.lot_size
        return math.floor(size / lot + 1e-9) * lot if lot else size

    def getvaluesize(self, size, price):
        return abs(size) * self.get_margin(price)

    def get_credit_interest(self, data, pos, dt):
        return 0.0                      # funding is booked by the broker


__all__ = ["PerpCommInfo"]
