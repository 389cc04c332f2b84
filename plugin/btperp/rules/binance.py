"""Binance USDⓈ-M perpetual futures."""

from __future__ import annotations

import numpy as np

from ..tiers import Tier
from .base import PartialRule, Rulebook


class BinanceUSDM(Rulebook):
    """Binance USDⓈ-M futures: tiered maintenance margin with the maintenance amount ``cum``.

    Maintenance margin = notional at mark × MMR − cum, the tier chosen by that notional; the
    liquidation price is the one of Binance's FAQ (WB, TMM1, UPNL1, cum, side, position, EP, MMR),
    which :func:`btperp.margin.liquidation_price` solves. In cross margin WB is the cross wallet
    balance and the other positions count with their unrealized PnL and maintenance margin at mark.
    """

    name = "binance-usdm"
    title = "Binance USDⓈ-M Futures"
    settle = "USDT"
    taker_fee = 0.0005
    maker_fee = 0.0002
    # exchangeInfo `liquidationFee` of BTCUSDT and ETHUSDT ("Liquidation Protocols": liquidation
    # clearance fee charged on the notional of the liquidated position).
    liquidation_fee_rate = 0.0125
    tiers_from_price = True
    documents = {
        "liquidation price": "https://www.binance.com/en/support/faq/b3c689c1f50a44cabb3a84e663b81d93",
        "leverage and margin (tiers, cum)": "https://www.binance.com/en/support/faq/360033162192",
        "funding": "https://www.binance.com/en/support/faq/360033525031",
        "liquidation protocols": "https://www.binance.com/en/support/faq/360033525271",
    }
    # "Binance Futures Liquidation Protocols" (Smart Liquidation): open orders cancelled, then one
    # large IOC order reduces the position without closing it; the liquidation fee on the amount
    # liquidated only; still margin-deficient: the rest closed at the bankruptcy price.
    partial_liquidation = PartialRule("tier", search=False,
                                      document="Binance Futures Liquidation Protocols")

    def maintenance_terms(self, side, size, entry_price, leverage, tier: Tier, taker_fee):
        # "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts":
        # maintenance margin = notional value × maintenance margin rate − maintenance amount (cum).
        return -tier.maintenance_amount, size * tier.maintenance_margin_rate

    def adl_score(self, *, side, entry_price, price, bankruptcy_price, wallet, unrealized,
                  maintenance):
        # "What Is Auto-Deleveraging (ADL) and How Does It Work" (Binance FAQ 360033525471):
        # LeveragePnL = PnL percent × margin ratio, PnL percent = max(0, unrealized profit) /
        # max(1, wallet balance), margin ratio = maintenance margin / (wallet + unrealized PnL), 0
        # when that is ≤ 0; Binance ranks traders by its quantile.
        wallet, unrealized, maintenance = (np.asarray(x, float) for x in (wallet, unrealized, maintenance))
        equity = wallet + unrealized
        ratio = np.where(equity > 0, maintenance / np.where(equity > 0, equity, 1.0), 0.0)
        return np.maximum(unrealized, 0.0) / np.maximum(wallet, 1.0) * ratio


class BinanceCoinM(BinanceUSDM):
    """Binance COIN-M perpetuals (``BTCUSD_PERP``): inverse contracts of 100 USD (BTC) or 10 USD.

    The USDⓈ-M rules in the reciprocal price (:mod:`btperp.inverse`): maintenance margin =
    position value in the coin at the mark (contracts × contract size / mark) × MMR − cum, the tier
    chosen by that value; the liquidation price is the one of "How to Calculate Liquidation Price
    of COIN-M Futures Contracts" (WB, TMM1, UPNL1, cum, side, contracts × contract size, EP, MMR;
    one-way and hedge, cross and isolated). Amounts in the coin.
    """

    name = "binance-coinm"
    title = "Binance COIN-M Futures"
    settle = "coin"
    inverse = True
    # Binance fee schedule, COIN-M regular users: maker 0.02 %, taker 0.05 %.
    taker_fee = 0.0005
    maker_fee = 0.0002
    # Not checked for COIN-M (the USDⓈ-M BTCUSDT rate): the broker's and the audit's liquidation
    # fee under fill_policy="fee" and on partial steps, never by calc. Pass liquidation_fee= to set it.
    liquidation_fee_rate = 0.0125
    documents = {
        "liquidation price": "https://www.binance.com/en/support/faq/ceccfcfb4e3a45e3b48b0b1bb1a8ae46",
        "leverage and margin (tiers, cum)": "https://www.binance.com/en/support/faq/be2c7d9d95b04a7e8044ed02dd7dfe5c",
        "contract specifications": "https://www.binance.com/en/futures/trading-rules/quarterly",
    }

    def default_contract_size(self, base: str) -> float | None:
        # COIN-M contract specifications: BTCUSD 100 USD a contract, every other COIN-M contract 10 USD.
        return 100.0 if base.upper() == "BTC" else 10.0
