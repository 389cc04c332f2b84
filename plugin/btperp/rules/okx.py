"""OKX USDT-margined (linear) perpetual swaps."""

from __future__ import annotations

from typing import ClassVar

from .base import PartialRule
from .generic import Generic


class OKXLinear(Generic):
    """OKX linear swaps, isolated and cross, with position tiers bounded in contracts.

    * The tier follows the position size in contracts ("Tiered maintenance margin ratio rules"),
      whatever the price; btperp's OKX tables are in base units (contracts × ``ctVal``, see
      :meth:`btperp.tiers.TierTable.from_okx`), so the tier follows ``size``.
    * Maintenance margin = position value at the mark × the tier's rate, with no maintenance
      amount; OKX liquidates when the margin ratio falls to 100 %, i.e. when equity reaches the
      maintenance margin *plus the liquidation fee*, the taker fee on the position value at the
      mark ("Tiered maintenance margin ratio rules", isolated USDT-margined contracts: margin
      ratio = (margin balance + PnL) / (face value × |contracts| × mark price × (tiered MMR + fee
      rate)); cross: (balance + PnL − ...) / (maintenance margin + liquidation fees)). btperp's
      maintenance margin for OKX is that denominator: the fee to close is counted.
    * Initial margin = face value × contracts × entry price / leverage (isolated; OKX values
      cross positions at the mark, btperp reports the entry value); the bankruptcy price is where
      the position's equity is zero.
    * Partial liquidation ("Forced partial liquidation"): a position in tier 3 or above is reduced
      two tiers at a time (:mod:`btperp.liquidation`); tiers 1 and 2 are liquidated whole.

    So, for one isolated position, the liquidation price is freqtrade's Gate/OKX formula
    (:class:`Generic`) with the tier's rate. Simplifications: pending orders' margin and fees are
    not modelled.
    """

    name = "okx"
    title = "OKX USDT-margined perpetual swaps"
    settle = "USDT"
    # OKX fee schedule, regular users (Lv1), perpetual swaps: maker 0.02 %, taker 0.05 %.
    taker_fee = 0.0005
    maker_fee = 0.0002
    # The fee to close is reserved in the maintenance margin; what is left at a full liquidation
    # goes to the insurance fund (no separate liquidation fee is modelled).
    liquidation_fee_rate = 0.0
    tiers_from_price = False
    approximate: ClassVar[bool] = False
    tier_basis = "position size"
    # OKX "Forced partial liquidation" (perpetual swaps): tier 3 and above are reduced by the
    # contracts that bring them two tiers down, then checked again; tiers 1-2 are closed whole.
    partial_liquidation = PartialRule("tier", search=False, tiers_down=2,
                                      document="OKX Forced partial liquidation (perpetual swaps)")
    documents = {
        "tiers and margin ratio": "https://www.okx.com/help/v-tiered-maintenance-margin-ratio-rules",
        "position tiers API": "https://www.okx.com/docs-v5/en/#public-data-rest-api-get-position-tiers",
        "isolated margin": "https://www.okx.com/help/vii-introduction-to-the-isolated-mode-of-single-multi-currency-portfolio-margin",
        "fees": "https://www.okx.com/fees",
    }

    def tier_notional(self, size, entry_price, price):
        # "Tiered maintenance margin ratio rules": the tier follows the position's number of
        # contracts; btperp's OKX tables are bounded in base units (contracts × ctVal).
        return size * 1.0


class OKXInverse(OKXLinear):
    """OKX coin-margined (inverse) perpetual swaps (``BTC-USD-SWAP``): contracts of 100 USD (BTC) or
    10 USD, margin and PnL in the coin.

    The USDT-margined rules in the reciprocal price (:mod:`btperp.inverse`): OKX's "Tiered
    maintenance margin ratio rules" for coin-margined swaps, isolated: margin ratio = (margin +
    UPL) / (face value × |contracts| / mark × (tiered MMR + fee rate)), UPL (long) = face value ×
    contracts × (1 / entry − 1 / mark); liquidated at 100 %. In the mirror that is the linear OKX
    denominator (position value in the coin × (MMR + fee)). The tier follows the number of
    contracts, whatever the price: btperp's OKX inverse tables are bounded in USD of face value
    (contracts × ``ctVal``), the mirror's size. Core and ``btperp calc`` only: the broker's opening
    check looks tiers up by position value, which OKX does not use.
    """

    name = "okx-inverse"
    title = "OKX coin-margined perpetual swaps"
    settle = "coin"
    inverse = True
    documents = dict(OKXLinear.documents, **{
        "contract specifications": "https://www.okx.com/trade-market/info/swap",
    })

    def default_contract_size(self, base: str) -> float | None:
        # OKX perpetual swap introduction: a face value of USD 100 for BTC, USD 10 for other coins.
        return 100.0 if base.upper() == "BTC" else 10.0
