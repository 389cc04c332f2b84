"""Funding payments of perpetual futures. Pure core: scalars or numpy arrays.

Formula, the same on every supported exchange:

    payment = signed size × price × rate       (positive: the position pays; negative: receives)

* Binance, "Introduction to Binance Futures Funding Rates": funding amount = nominal value of
  positions (mark price × size) × funding rate; positive rate: longs pay shorts.
* Bybit, "Funding Fee Calculation": funding fee = position value (size × mark price) × funding rate.
* Hyperliquid, "Funding": payment = position size × oracle price × funding rate. btperp values it
  at the mark price, the closest series ccxt provides (a documented simplification).

Payments happen at the exchange's funding timestamps, never on a fixed clock: the interval is 8h,
4h or 1h depending on symbol and date.
"""

from __future__ import annotations

import numpy as np

#: Largest plausible funding rate of one event, as a fraction: 3 %. Exchanges clamp the rate to a
#: per-symbol cap; the highest Binance USDⓈ-M publishes is 0.03 (``adjustedFundingRateCap`` of
#: ``GET /fapi/v1/fundingInfo``, e.g. BLZUSDT and UNFIUSDT at ±0.03; the default cap, ±75 % of
#: the first tier's initial minus maintenance margin rate, is 0.3 % for BTCUSDT). A rate above it
#: in a file is almost surely a unit mistake (percent for fraction): the loader warns, naming them.
FUNDING_RATE_BOUND = 0.03


def funding_payment(signed_size, price, rate):
    """What a position of ``signed_size`` (base units, negative = short) pays at one funding event.

    ``price`` is the mark price at the funding time (USDT), ``rate`` the funding rate (fraction).
    """
    return np.multiply(np.multiply(signed_size, price), rate)

