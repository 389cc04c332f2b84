"""What every exchange rulebook provides. One subclass per exchange overrides the same methods.

Within one tier every supported exchange makes the maintenance margin of a position an affine
function of the price ``P`` it is valued at::

    MM(P) = fixed + per_price * P

(Binance and Hyperliquid: ``fixed = -cum``, ``per_price = size * mmr``; Bybit values the position
at its entry price, so ``per_price = 0``). :mod:`btperp.margin` solves equity(P) = MM(P) with
these terms, which is each exchange's published liquidation-price formula (see the tests that
check it against the exchanges' own examples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..funding import funding_payment
from ..tiers import Tier, TierTable


@dataclass(frozen=True)
class PartialRule:
    """How an exchange reduces a liquidated position before it closes it whole (what
    :func:`btperp.liquidation.partial_step` applies; its module docstring defines each kind).

    ``kind="tier"``: the position's notional is brought below the floor of its tier at the trigger
    price (the largest size in a lower tier). ``search=False`` (Binance): one tier down, and the
    rest closed at the bankruptcy price if that does not restore compliance; ``search=True``
    (Bybit): the highest lower tier whose margin requirement the remainder meets, else none.
    ``tiers_down=2`` (OKX): the remainder is brought two tiers down (inside tier k − 2), so a
    position in tier 1 or 2 is closed whole.
    ``kind="fraction"`` (Hyperliquid): ``fraction`` of a position whose notional at the trigger
    price is above ``min_notional``; a trigger within ``cooldown`` seconds of a step closes the
    whole position.
    """

    kind: str
    search: bool = False
    tiers_down: int = 1
    fraction: float = 0.0
    min_notional: float = 0.0
    cooldown: float = 0.0
    document: str = ""
    """The exchange document the rule implements."""


class Rulebook:
    """An exchange's margin rules for linear (USDT/USDC-settled) perpetuals."""

    name: ClassVar[str]
    """btperp's name of the exchange (``binance-usdm``), also the ``datasets/`` folder name."""
    title: ClassVar[str]
    settle: ClassVar[str] = "USDT"
    """Settlement currency of the linear perpetuals the rulebook covers."""
    taker_fee: ClassVar[float]
    """Standard (lowest VIP level) taker fee rate, fraction of notional."""
    maker_fee: ClassVar[float]
    """Standard maker fee rate, fraction of notional."""
    liquidation_fee_rate: ClassVar[float]
    """Fee charged on the notional of a liquidated position, fraction (0 where the exchange keeps
    the remaining margin instead)."""
    tiers_from_price: ClassVar[bool] = True
    """True when the tier (and the maintenance margin) follows the notional at the valuation price;
    False when it follows the notional at the entry price."""
    documents: ClassVar[dict[str, str]] = {}
    """The exchange documents this rulebook implements, by topic."""
    approximate: ClassVar[bool] = False
    """True for a rulebook that approximates a venue rather than implementing its documents
    (:class:`~btperp.rules.generic.Generic`); its results say so."""
    tier_basis: ClassVar[str] = "notional"
    """What selects the tier, for messages: ``notional`` (in the settlement currency) or ``position
    size`` (OKX: contracts, in base units)."""
    inverse: ClassVar[bool] = False
    """True for coin-margined (inverse) contracts: the rulebook's methods then speak of the mirror
    position in the reciprocal price (:mod:`btperp.inverse`), amounts in the coin."""
    maintenance_amounts: ClassVar[bool] = True
    """False when the exchange deducts no maintenance amount (OKX, the generic formula)."""
    partial_liquidation: ClassVar[PartialRule | None] = None
    """How the exchange reduces a liquidated position first (None: it closes it whole)."""

    # --- tiers ---------------------------------------------------------------------------------

    def tier_notional(self, size, entry_price, price):
        """Notional (USDT) that selects the tier of a position of ``size`` valued at ``price``."""
        return size * (price if self.tiers_from_price else entry_price)

    def tier_breakpoints(self, size: float, entry_price: float, table: TierTable) -> list[float]:
        """Prices at which a position of ``size`` changes tier (none if tiers follow the entry)."""
        if not self.tiers_from_price or size <= 0:
            return []
        return [t.min_notional / size for t in table.tiers[1:]]

    def default_contract_size(self, base: str) -> float | None:
        """USD per contract of the exchange's coin-margined ``base`` contracts (None: linear)."""
        return None

    def default_table(self, max_leverage: float | None = None) -> TierTable | None:
        """The tier table to use when none is given (None: the caller must give one)."""
        return None

    # --- margins -------------------------------------------------------------------------------

    def fee_to_close(self, side, size, entry_price, leverage, taker_fee):
        """Fee reserved in the margin for closing the position (0 unless the exchange reserves it)."""
        return 0.0 * size

    def initial_margin(self, side, size, entry_price, leverage, taker_fee):
        """Initial margin of a new position: ``size * entry_price / leverage`` (+ rule-specific parts)."""
        # Binance "Leverage and Margin of USDⓈ-M Futures": initial margin = notional / leverage;
        # Hyperliquid "Margining": position value / leverage; Bybit adds its fee to close (subclass).
        return size * entry_price / leverage + self.fee_to_close(side, size, entry_price, leverage,
                                                                   taker_fee)

    def maintenance_terms(self, side, size, entry_price, leverage, tier: Tier, taker_fee):
        """``(fixed, per_price)`` of ``MM(P) = fixed + per_price * P`` within ``tier``."""
        raise NotImplementedError

    def maintenance_margin(self, side, size, entry_price, price, leverage, tier: Tier, taker_fee):
        """Maintenance margin (USDT) of a position valued at ``price`` within ``tier``."""
        fixed, per_price = self.maintenance_terms(side, size, entry_price, leverage, tier, taker_fee)
        return fixed + per_price * price

    def bankruptcy_reserve(self, side, size, entry_price, leverage, taker_fee):
        """Equity left at the bankruptcy price (the reserved fee to close, or 0)."""
        return self.fee_to_close(side, size, entry_price, leverage, taker_fee)

    # --- auto-deleveraging ----------------------------------------------------------------------

    def adl_score(self, *, side, entry_price, price, bankruptcy_price, wallet, unrealized,
                  maintenance):
        """The exchange's auto-deleveraging ranking score of a position valued at ``price`` (higher:
        deleveraged sooner), from its side, entry and bankruptcy price, and the wallet balance,
        unrealized PnL and maintenance margin of its margin (the isolated position's, or the cross
        account's). An indicator only: the exchange ranks every trader by it. NaN where the
        exchange publishes no formula."""
        return np.full(np.shape(np.asarray(price, float)), np.nan)

    # --- funding -------------------------------------------------------------------------------

    def funding_payment(self, signed_size, price, rate):
        """What a position pays at a funding event (USDT; negative = it receives).

        The same on every supported exchange: :func:`btperp.funding.funding_payment`.
        """
        return funding_payment(signed_size, price, rate)

    def __repr__(self) -> str:
        return f"<Rulebook {self.name}>"
