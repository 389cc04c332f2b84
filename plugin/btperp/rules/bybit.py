"""Bybit linear (USDT) perpetuals."""

from __future__ import annotations

import numpy as np

from ..tiers import Tier
from .base import PartialRule, Rulebook


class BybitLinear(Rulebook):
    """Bybit USDT perpetuals, isolated and cross, with risk-limit tiers and ``mmDeduction``.

    Bybit values the position at its entry price for margin (position value = size × entry price)
    and reserves the estimated fee to close in both the initial and the maintenance margin:

    * fee to close = size × bankruptcy price × taker fee, bankruptcy price = entry × (1 ∓ 1/leverage)
    * initial margin = position value / leverage + fee to close
    * maintenance margin = position value × MMR − mmDeduction + fee to close
    * liquidation price (long) = entry − (initial margin − maintenance margin) / size − extra margin / size

    Simplification: under the Unified Trading Account Bybit revalues the position at the mark price;
    btperp follows the per-position formulas above, which Bybit's own worked examples use.
    """

    name = "bybit"
    title = "Bybit USDT Perpetual"
    settle = "USDT"
    taker_fee = 0.00055
    maker_fee = 0.0002
    # Bybit keeps no separate liquidation fee: the position is taken over at its bankruptcy price
    # and the remaining margin (maintenance margin and the reserved fee to close) goes to the
    # insurance fund ("Liquidation Process (USDT Contract)").
    liquidation_fee_rate = 0.0
    tiers_from_price = False
    documents = {
        "liquidation price": "https://www.bybit.com/en/help-center/article/Liquidation-Price-USDT-Contract",
        "bankruptcy price": "https://www.bybit.com/en/help-center/article/Bankruptcy-Price-USDT-Contract",
        "initial margin": "https://www.bybit.com/en/help-center/article/Initial-Margin-USDT-Contract",
        "maintenance margin": "https://www.bybit.com/en/help-center/article/Maintenance-Margin-USDT-Contract",
        "funding": "https://www.bybit.com/en/help-center/article/Funding-fee-calculation",
        "liquidation process": "https://www.bybit.com/en/help-center/article/Liquidation-Process-USDT-Contract",
    }
    # "Liquidation Process (USDT Contract)": above the lowest tier, a FillOrKill order of the
    # difference between the position value and the lower tier's value that meets the margin
    # requirement; still in liquidation (or in the lowest tier): taken over at the bankruptcy price.
    partial_liquidation = PartialRule("tier", search=True,
                                      document="Bybit Liquidation Process (USDT Contract)")

    def fee_to_close(self, side, size, entry_price, leverage, taker_fee):
        # "Bankruptcy Price (USDT Contract)": long = entry × (1 − 1/leverage), short = entry × (1 + 1/leverage);
        # "Initial Margin (USDT Contract)": fee to close = size × bankruptcy price × taker fee rate.
        bankruptcy = entry_price * (1 - np.sign(side) / leverage)
        return size * bankruptcy * taker_fee

    def maintenance_terms(self, side, size, entry_price, leverage, tier: Tier, taker_fee):
        # "Maintenance Margin (USDT Contract)": position value × MMR − mmDeduction (+ fee to close),
        # position value at the entry price: no term moves with the mark price.
        fixed = (size * entry_price * tier.maintenance_margin_rate - tier.maintenance_amount
                 + self.fee_to_close(side, size, entry_price, leverage, taker_fee))
        return fixed, 0.0 * size

    def adl_score(self, *, side, entry_price, price, bankruptcy_price, wallet, unrealized,
                  maintenance):
        # "What is Auto-Deleveraging (ADL)" (Bybit help center): ranking = PnL% × effective
        # leverage in profit, PnL% / effective leverage in loss; effective leverage = |MV| / (MV − BV),
        # PnL% = (MV − AEV) / |AEV|, with MV, BV, AEV the signed position values at the mark,
        # bankruptcy and average entry prices (a short's are negative).
        side, entry, mark, bust = (np.asarray(x, float) for x in (side, entry_price, price, bankruptcy_price))
        side = np.sign(side)
        pnl = side * (mark - entry) / entry
        effective = mark / (side * (mark - bust))
        return np.where(pnl >= 0, pnl * effective, pnl / effective)


class BybitInverse(BybitLinear):
    """Bybit inverse perpetuals (``BTCUSD``): contracts of 1 USD, margin and PnL in the coin.

    The USDT rules in the reciprocal price (:mod:`btperp.inverse`): position value at entry =
    contracts / entry price; initial margin = position value / leverage + fee to close;
    maintenance margin = position value × MMR − mmDeduction + fee to close; fee to close =
    contracts / bankruptcy price × taker fee; bankruptcy price = entry × leverage / (leverage ± 1)
    ("Bankruptcy Price (Inverse Contract)"); liquidation price (long) = contracts / [position value
    + (initial margin − maintenance margin)] ("Liquidation Price Calculation under Isolated Mode
    (Unified Trading Account)"). Same simplification as the USDT rulebook: valued at entry.
    """

    name = "bybit-inverse"
    title = "Bybit Inverse Perpetual"
    settle = "coin"
    inverse = True
    documents = {
        "liquidation price": "https://www.bybit.com/en/help-center/article/Liquidation-Price-Calculation-under-Isolated-Mode-Unified-Trading-Account",
        "liquidation price (classic)": "https://help.bybit.com/hc/en-us/articles/360039261334-How-to-calculate-Liquidation-Price-Inverse-Contract-",
        "bankruptcy price": "https://www.bybit.com/en/help-center/article/Bankruptcy-Price-Inverse-Contract",
        "maintenance margin": "https://www.bybit.com/en/help-center/article/Maintenance-Margin-Inverse-Contract",
    }

    def default_contract_size(self, base: str) -> float | None:
        # "Introduction to Inverse Perpetual Contract": one contract is 1 USD.
        return 1.0
