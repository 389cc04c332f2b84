"""How an exchange closes a liquidated position: fill price, fee and insurance fund. Pure core.

A position is liquidated when the mark price reaches its liquidation price (the *trigger price*;
the mark's open when it opened beyond). What happens next follows a fill policy:

``bankruptcy`` (default)
    The liquidation engine takes the position over at its **bankruptcy price**, the price where
    the position's margin balance falls to what the exchange reserves for closing (0 on Binance
    and Hyperliquid, the fee to close on Bybit). The trader loses the position's whole margin;
    the engine closes in the market at the trigger price and the difference between that and the
    bankruptcy price goes to the **insurance fund** (Binance "Liquidation Protocols": "the
    remaining margin will be added to the insurance fund"; Bybit "Liquidation Process (USDT
    Contract)": "the position is taken over at the bankruptcy price").

``fee``
    The position is closed at the trigger price and the exchange charges a liquidation clearance
    fee on its notional, which goes to the insurance fund (Binance "Liquidation Protocols":
    liquidation clearance fee; the rate is the symbol's ``liquidationFee`` in exchangeInfo). What
    is left of the margin stays with the trader.

Either way the trader's balance never goes below zero: when the mark jumps past the bankruptcy
price (the margin balance at the trigger is negative) the position is taken over at the
bankruptcy price and the insurance fund covers the shortfall (a negative flow).

Every liquidation satisfies (tested)::

    insurance_flow = pnl at the trigger price − pnl at the fill price + insurance_fee
    balance_after  = balance + pnl at the fill price − fee  ≥ 0

Cross margin: the positions of the account share one balance. :func:`settle_group` gives each
position the share of the account's margin balance at the trigger prices in proportion to its
maintenance margin and settles each share as above, so the account ends at zero (bankruptcy) or
keeps what the fees leave (fee policy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .choice import Choice
from .errors import InputError


class FillPolicy(Choice):
    """How a liquidated position is closed (module docstring)."""

    BANKRUPTCY = "bankruptcy"
    FEE = "fee"


@dataclass(frozen=True)
class Settlement:
    """The outcome of one liquidation (amounts in the settlement currency, USDT)."""

    trigger_price: float
    """Mark (or last) price at which the liquidation happened."""
    fill_price: float
    """Price the position was closed at (bankruptcy price, or trigger price under the fee policy)."""
    bankruptcy_price: float
    """Price at which the position's balance equals the exchange's reserve (0 margin left)."""
    equity_at_trigger: float
    """The position's margin balance at the trigger price (balance + unrealized PnL there)."""
    realized_pnl: float
    """side × size × (fill − entry): what the trader realizes on the close."""
    fee: float
    """Fee charged to the trader for the close (liquidation fee, or the reserved fee to close)."""
    insurance_fee: float
    """Part of ``fee`` that goes to the insurance fund (the liquidation clearance fee)."""
    insurance_flow: float
    """What the insurance fund gains (> 0) or pays out to cover a shortfall (< 0)."""
    balance_after: float
    """What the trader keeps of the position's balance (≥ 0)."""

    @property
    def loss(self) -> float:
        """What the trader lost on the liquidation, from the position's balance."""
        return -(self.realized_pnl - self.fee)


def bankruptcy_fill(side: int, size: float, entry_price: float, balance: float,
                    reserve: float = 0.0) -> float:
    """The price where ``balance`` + side × size × (P − entry) = ``reserve`` (may be ≤ 0 for a
    long with more margin than notional: the position never goes bankrupt)."""
    # Binance/Bybit bankruptcy price: the margin balance is exhausted (Bybit keeps the fee to close).
    return entry_price + side * (reserve - balance) / size


def settle(side: int, size: float, entry_price: float, trigger_price: float, balance: float, *,
           policy: "str | FillPolicy" = FillPolicy.BANKRUPTCY, fee_rate: float = 0.0,
           reserve: float = 0.0) -> Settlement:
    """Settle the liquidation of one position of ``size`` (> 0) and ``side`` (+1 long, −1 short).

    ``balance`` is the margin backing the position before its PnL (the isolated margin; in cross
    margin its share, see :func:`settle_group`); ``reserve`` what the exchange keeps at the
    bankruptcy price (Bybit's fee to close); ``fee_rate`` the liquidation fee on the notional at
    the trigger price (fee policy).
    """
    policy = FillPolicy.parse(policy)
    side, size, entry_price, trigger_price, balance, fee_rate, reserve = (
        int(side), float(size), float(entry_price), float(trigger_price), float(balance),
        float(fee_rate), float(reserve))
    if not (size > 0 and math.isfinite(size)):
        raise InputError(f"must be a positive number, got {size!r}", field="size")
    pnl_trigger = side * size * (trigger_price - entry_price)
    equity = balance + pnl_trigger
    bankrupt = bankruptcy_fill(side, size, entry_price, balance, reserve)
    if policy is FillPolicy.FEE and equity >= reserve:
        fee = min(fee_rate * size * trigger_price, equity)   # the balance never goes negative
        return Settlement(trigger_price, trigger_price, bankrupt, equity, pnl_trigger, fee, fee, fee,
                          equity - fee)
    # Taken over at the bankruptcy price: the trader keeps nothing; the reserve pays the close.
    pnl_fill = reserve - balance
    return Settlement(trigger_price, bankrupt, bankrupt, equity, pnl_fill, reserve, 0.0,
                      pnl_trigger - pnl_fill, 0.0)


@dataclass(frozen=True)
class GroupLeg:
    """One position of a cross-margin account being liquidated."""

    side: int
    size: float
    entry_price: float
    trigger_price: float
    maintenance_margin: float
    """Its maintenance margin at the trigger price (weights its share of the balance)."""
    reserve: float = 0.0


def settle_group(legs: Sequence[GroupLeg], balance: float, *,
                 policy: "str | FillPolicy" = FillPolicy.BANKRUPTCY,
                 fee_rate: float = 0.0) -> list[Settlement]:
    """Settle a cross-margin account: ``balance`` is the cross wallet shared by ``legs``.

    Each leg gets the share ``w`` = MM / ΣMM of the account's margin balance at the trigger prices
    (equal shares if every MM is 0) and is settled by :func:`settle` on that share; the shares add
    up to the account, so the account's outcome does not depend on how it is split.
    """
    if not legs:
        return []
    upnl = [l.side * l.size * (l.trigger_price - l.entry_price) for l in legs]
    equity = balance + sum(upnl)
    total_mm = sum(l.maintenance_margin for l in legs)
    weights = ([l.maintenance_margin / total_mm for l in legs] if total_mm > 0
               else [1.0 / len(legs)] * len(legs))
    return [settle(l.side, l.size, l.entry_price, l.trigger_price, w * equity - u, policy=policy,
                   fee_rate=fee_rate, reserve=l.reserve)
            for l, w, u in zip(legs, weights, upnl)]


__all__ = ["FillPolicy", "Settlement", "GroupLeg", "settle", "settle_group", "bankruptcy_fill"]
