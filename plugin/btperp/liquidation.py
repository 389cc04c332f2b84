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

Partial liquidation (``liquidation="partial"``, the default where the exchange does it)
---------------------------------------------------------------------------------------
Exchanges reduce a larger position before they close it. :func:`partial_step` applies the
rulebook's :class:`~btperp.rules.base.PartialRule` at the trigger price ``T`` to a position of
size ``S``, entry ``E``, side ``σ``, backed by ``balance`` (isolated margin, or the cross wallet of
an account holding only it). It picks the size ``s`` kept; the part ``S − s`` is closed at ``T``::

    pnl         = σ (S − s)(T − E)
    fee         = liquidation fee rate × (S − s) × T        (the amount liquidated only)
    balance'    = balance + pnl − fee                        (what backs the remainder)
    equity'     = balance' + σ s (T − E)  =  equity at T − fee
    ratio'      = MM(s, T) / equity'                         (compliant when < 1 − 10⁻⁶)

and the fee goes to the insurance fund. The remainder keeps its entry price and is checked again
on the rest of the bar's path from the step's time.

``binance-usdm`` ("Binance Futures Liquidation Protocols", Smart Liquidation: open orders are
    cancelled, then *one* large IOC order tries to bring the account back to margin compliance
    without closing it; the liquidation fee on the amount liquidated only; still deficient after
    the realized loss and fee: the rest is closed at the bankruptcy price). btperp's one order
    leaves the largest size whose notional at ``T`` is in the tier *below* the one the position
    is in at ``T`` (just under that tier's floor ``minNotional``: s = floor / T, rounded down to
    the lot size, one step below when rounding leaves it on the floor). Not compliant (ratio' ≥ 1)
    after it: the rest is settled by :func:`settle` at ``T`` (the bankruptcy price) in the same
    event. A position in tier 1 is closed whole.
``bybit`` ("Liquidation Process (USDT Contract)": above the lowest risk limit, a FillOrKill order
    of the difference between the position value and the lower risk limit's value that meets the
    margin requirement; still in liquidation: taken over at the bankruptcy price). btperp tries
    the tiers below, highest first, each at the largest size inside it (Bybit's tiers follow the
    value at the entry price: s = floor / E), and takes the first whose remainder is compliant at
    ``T``; none is, or tier 1: closed whole. Bybit charges no liquidation fee, so one tier down
    always complies at the trigger; the next trigger (a lower price for a long) steps again.
``okx`` ("Forced partial liquidation" rules of OKX perpetual swaps: a position in tier 3 or above
    whose margin ratio falls below its tier's requirement, but not below tier 1's, is reduced by
    the contracts that bring it *two tiers* down; checked again, and reduced again while still
    short; tiers 1 and 2 are liquidated whole). btperp's step leaves the largest size inside tier
    k − 2 (OKX tiers follow the size: s = floor of tier k − 1); not compliant after it: the rest is
    closed at the bankruptcy price as for Binance. OKX's 2019 rule brought the position to tier 1
    in one order; btperp follows the current two-tier rule.
``hyperliquid`` ("Liquidations": for liquidatable positions larger than 100k USDC only 20 % of the
    position is sent as a market liquidation order; no clearance fee; for 30 seconds after a
    partial liquidation every liquidation order is for the entire position). A position whose
    notional at ``T`` is above 100,000 keeps 80 % (lot-rounded); a trigger less than 30 s after a
    step closes the whole remainder. btperp knows a step's time to the bar (or detail bar) it
    happened in, so a second trigger in the same bar counts as within the cooldown.

Compliant means a ratio' below 1 − 10⁻⁶ (:data:`COMPLIANCE_MARGIN`): a short stepped to the top of
a tier re-enters it as the price rises, and the steps that follow close less and less, their
ratios tending to 1; the margin stops that series after a few steps and closes the rest.

No step when the trader could not pay it: an equity' below what the exchange keeps at the
bankruptcy price (a gap past the bankruptcy price), or a balance' below zero; the position is then
settled whole by :func:`settle` as under ``liquidation="full"``. Money is the same either way when
the rest is closed at the bankruptcy price in the same event: the trader loses the whole balance,
and the insurance fund gets the fee plus what the rest's take-over leaves (their sum is what a
whole take-over gives it); only the records differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from .choice import Choice
from .errors import InputError
from .margin import Position, maintenance_margin, tier_of
from .rules import PartialRule, Rulebook


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


#: How far below 1 a step must leave the remainder's margin ratio to count as compliant. A short
#: stepped to the top of a tier re-enters it as the price rises, and each further step closes less
#: (the ratios after them tend to 1, the prices to where the remainder is due whole): a ratio this
#: close to 1 has not restored compliance, and the rest is closed (module docstring).
COMPLIANCE_MARGIN = 1e-6


class LiquidationMode(Choice):
    """Whether a liquidation reduces the position first where the exchange does (module docstring)."""

    PARTIAL = "partial"
    FULL = "full"

    @classmethod
    def parse(cls, value, field: str = "liquidation"):
        text = str(value.value if isinstance(value, LiquidationMode) else value).strip().lower()
        try:
            return cls(text)
        except ValueError:
            raise InputError(f"must be 'partial' or 'full', got {value!r}", field=field) from None


def partial_rule(rulebook: Rulebook, mode: "str | LiquidationMode") -> PartialRule | None:
    """The rule a liquidation follows: the rulebook's partial rule under ``partial``, else None."""
    if LiquidationMode.parse(mode) is LiquidationMode.FULL:
        return None
    return rulebook.partial_liquidation


@dataclass(frozen=True)
class Step:
    """One partial liquidation: part of a position closed at the trigger price (module docstring)."""

    trigger_price: float
    closed: float
    """Size closed (> 0)."""
    remaining: float
    """Size left open (> 0)."""
    realized_pnl: float
    """σ × closed × (trigger − entry)."""
    fee: float
    """Liquidation fee on the part closed (it goes to the insurance fund)."""
    equity: float
    """Margin balance at the trigger price before the step."""
    balance_after: float
    """What backs the remainder: balance + pnl − fee."""
    equity_after: float
    """The remainder's margin balance at the trigger price: equity − fee."""
    maintenance_margin: float
    """The remainder's maintenance margin at the trigger price."""
    tier: int
    """The remainder's tier (1-based) at the trigger price."""

    @property
    def margin_ratio(self) -> float:
        """The remainder's margin ratio at the trigger price (< 1: compliant)."""
        return self.maintenance_margin / self.equity_after if self.equity_after > 0 else math.inf

    @property
    def compliant(self) -> bool:
        """The remainder's margin ratio is below 1 by more than :data:`COMPLIANCE_MARGIN`."""
        return self.margin_ratio < 1.0 - COMPLIANCE_MARGIN

    @property
    def insurance_flow(self) -> float:
        return self.fee

    @property
    def loss(self) -> float:
        return -(self.realized_pnl - self.fee)


def _kept_sizes(rule: PartialRule, rulebook: Rulebook, pos: Position, trigger: float,
                lot_size: float | None) -> list[float]:
    """The sizes a step may leave, in the order the rule tries them (module docstring)."""
    size = pos.size
    if rule.kind == "fraction":
        if not size * trigger > rule.min_notional:
            return []
        closed = size * rule.fraction
        if lot_size:
            closed = math.floor(closed / lot_size + 1e-9) * lot_size
        return [size - closed] if closed > 0 else []
    if rule.kind != "tier":
        raise InputError(f"unknown partial liquidation kind {rule.kind!r}", field="liquidation")
    table = pos.tiers
    unit = float(rulebook.tier_notional(1.0, pos.entry_price, trigger))   # notional per unit
    current = table.tiers.index(tier_of(rulebook, pos, trigger))
    out = []
    for k in range(current - rule.tiers_down + 1, 0, -1):
        # the largest size whose notional is below tier k's floor (inside tier k − 1)
        floor = table.tiers[k].min_notional
        kept = floor / unit
        if lot_size:
            kept = math.floor(kept / lot_size + 1e-9) * lot_size
        while kept > 0 and table.lookup(kept * unit).min_notional >= floor:
            kept = kept - lot_size if lot_size else math.nextafter(kept, 0.0)
        if 0 < kept < size:
            out.append(kept)
        if not rule.search:
            break
    return out


def partial_step(rulebook: Rulebook, pos: Position, trigger_price: float, balance: float, *,
                 rule: PartialRule | None, fee_rate: float, taker_fee: float,
                 lot_size: float | None = None) -> Step | None:
    """The partial liquidation of ``pos`` (its ``size``, ``entry_price``, ``leverage`` and tier
    table) at ``trigger_price``, backed by ``balance``, under ``rule`` (module docstring); None when
    the rule closes it whole (no rule, tier 1, too small, or the trader could not pay the step)."""
    if rule is None:
        return None
    side = float(pos.side)
    trigger, balance = float(trigger_price), float(balance)
    equity = balance + side * pos.size * (trigger - pos.entry_price)
    step = None
    for kept in _kept_sizes(rule, rulebook, pos, trigger, lot_size):
        closed = pos.size - kept
        pnl = side * closed * (trigger - pos.entry_price)
        fee = float(fee_rate) * closed * trigger
        rest = replace(pos, size=kept)
        reserve = float(rulebook.bankruptcy_reserve(pos.side, kept, pos.entry_price, pos.leverage,
                                                    taker_fee))
        if equity - fee < reserve or balance + pnl - fee < 0:
            return None                 # it cannot pay the step: settled whole
        step = Step(trigger, closed, kept, pnl, fee, equity, balance + pnl - fee, equity - fee,
                    float(maintenance_margin(rulebook, rest, trigger, taker_fee)),
                    tier_of(rulebook, rest, trigger).tier)
        if step.compliant or not rule.search:
            return step
    return None


__all__ = ["FillPolicy", "Settlement", "GroupLeg", "settle", "settle_group", "bankruptcy_fill",
           "LiquidationMode", "Step", "partial_step", "partial_rule", "COMPLIANCE_MARGIN"]
