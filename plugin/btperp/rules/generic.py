"""A generic linear rulebook: freqtrade's formula for Gate-like exchanges, with explicit rates."""

from __future__ import annotations

from typing import ClassVar

from ..tiers import Tier
from .base import Rulebook


class Generic(Rulebook):
    """An approximation for any venue: maintenance margin = notional at the mark × (MMR + taker fee),
    no maintenance amount, the rate of the tier of the notional at entry, initial margin = notional
    at entry / leverage, bankruptcy where the margin is gone.

    This is the formula freqtrade applies to Gate and OKX (``dry_run_liquidation_price``, after
    Gate's "Liquidation Price, Bankruptcy Price": liquidation price = (entry ∓ margin / size) /
    (1 ∓ (MMR + taker fee rate)), − for longs, + for shorts), which :func:`btperp.margin.solve_price`
    solves as equity = maintenance margin. It is no exchange's exact rulebook: the rates are the
    user's (no tier table, no default taker fee) and every result says it approximates.
    """

    name = "generic"
    title = "Generic (an approximation: MMR + taker fee, no maintenance amount)"
    settle = "USDT"
    taker_fee = None            # explicit: the caller gives it
    maker_fee = None
    liquidation_fee_rate = 0.0
    # The tier (if a table is given at all) is the one of the notional at entry, as freqtrade picks
    # it once per trade: without a maintenance amount the requirement jumps at every tier bound,
    # and a tier that moved with the price would give one position several liquidation prices.
    tiers_from_price = False
    approximate: ClassVar[bool] = True
    maintenance_amounts = False
    documents = {
        "formula": "https://github.com/freqtrade/freqtrade/blob/develop/freqtrade/exchange/exchange.py "
                   "(dry_run_liquidation_price)",
        "Gate liquidation price": "https://www.gate.io/help/futures/futures/27724/liquidation-price-bankruptcy-price",
    }

    def maintenance_terms(self, side, size, entry_price, leverage, tier: Tier, taker_fee):
        # freqtrade (Gate, OKX): maintenance requirement = position value × (MMR + taker fee rate);
        # no maintenance amount is deducted.
        return 0.0 * size, size * (tier.maintenance_margin_rate + taker_fee)
