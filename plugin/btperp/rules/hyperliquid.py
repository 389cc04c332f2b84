"""Hyperliquid perpetuals."""

from __future__ import annotations

import math

from ..tiers import Tier, TierTable
from .base import PartialRule, Rulebook


class Hyperliquid(Rulebook):
    """Hyperliquid: no tiers; maintenance margin is half the initial margin at max leverage.

    ``l = 1 / maintenance_leverage`` with ``maintenance_leverage = 2 × max_leverage``, so the
    maintenance margin is notional × l. The docs' liquidation price
    ``liq_price = price − side × margin_available / position_size / (1 − l × side)`` is the same
    line :func:`btperp.margin.liquidation_price` solves (a test checks the two agree).
    """

    name = "hyperliquid"
    title = "Hyperliquid Perpetuals"
    settle = "USDC"
    taker_fee = 0.00045
    maker_fee = 0.00015
    # No liquidation fee: in a backstop liquidation the maintenance margin is not returned
    # (it stays with the liquidator vault), which the bankruptcy-price fill already expresses.
    liquidation_fee_rate = 0.0
    tiers_from_price = True
    documents = {
        "liquidations": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/liquidations",
        "margining": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/margining",
        "funding": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/funding",
    }
    # "Liquidations" (partial liquidations): for liquidatable positions larger than 100k USDC only
    # 20 % is sent as a market liquidation order; for 30 seconds after a partial liquidation the
    # orders are for the entire position. No clearance fee.
    partial_liquidation = PartialRule("fraction", fraction=0.2, min_notional=100_000.0,
                                      cooldown=30.0, document="Hyperliquid Docs: Liquidations")

    def default_table(self, max_leverage: float | None = None) -> TierTable | None:
        if max_leverage is None:
            return None
        return self.table_for_max_leverage(max_leverage)

    @staticmethod
    def table_for_max_leverage(max_leverage: float, symbol: str | None = None) -> TierTable:
        # "Liquidations": maintenance margin is half of the initial margin at max leverage.
        if not (max_leverage >= 1 and math.isfinite(max_leverage)):
            raise ValueError(f"max_leverage must be a finite number >= 1, got {max_leverage}")
        tier = Tier(1, 0.0, math.inf, 1.0 / (2.0 * max_leverage), float(max_leverage), 0.0)
        return TierTable([tier], symbol=symbol, source=f"max leverage {max_leverage:g}",
                         check_amounts=False)

    def maintenance_terms(self, side, size, entry_price, leverage, tier: Tier, taker_fee):
        # "Liquidations": maintenance margin = notional × l (l = 1 / maintenance leverage).
        return 0.0 * size, size * tier.maintenance_margin_rate

