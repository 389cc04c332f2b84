"""Coin-margined (inverse) contracts in backtrader: the one place where the broker converts between
what the strategy sees and what the account computes.

The strategy trades *contracts* (``contract_size`` USD each) at prices in USD per coin; its cash and
value are in the coin. The account (:class:`btperp.account.Account`) computes nothing of its own for
inverse contracts: it is given **the mirror** (:mod:`btperp.inverse`), in which an inverse position
of ``contracts`` contracts entered at ``E`` is a linear position of the opposite side, of size
``Q = contracts × contract size``, entered at ``1/E``; a bar's prices become ``1/P`` with its high
and low swapped. Every margin, PnL, fee, funding, liquidation and bankruptcy formula is then the
linear one (Binance "How to Calculate Liquidation Price of COIN-M Futures Contracts"; Bybit
"Liquidation Price Calculation under Isolated Mode (Unified Trading Account)"), its amounts in the
coin. :class:`Mirror` maps sizes, prices, bars, funding and the account's records across;
:class:`MirrorPosition` keeps backtrader's ``Position`` (contracts, USD) in step with the account's
mirror holding; :class:`InverseCommInfo` gives backtrader's trades their PnL in the coin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


from ..account import Fill, FundingPayment, Holding, Liquidation, MarginCall
from ..inverse import mirror_funding
from .commission import PerpCommInfo


def reciprocal(x: float) -> float:
    """``1/x``, the map between USD prices and mirror prices (its own inverse); 0 ↔ inf, NaN stays."""
    if x == 0:
        return math.inf
    if x == math.inf:
        return 0.0
    return 1.0 / x


@dataclass(frozen=True)
class Mirror:
    """The conversion of one inverse instrument of ``contract_size`` USD per contract."""

    contract_size: float

    # --- sizes and prices --------------------------------------------------------------------

    def size(self, contracts: float) -> float:
        """Signed contracts → the mirror's signed size: −contracts × contract size (sides flip)."""
        return -contracts * self.contract_size

    def contracts(self, size: float) -> float:
        """The mirror's signed size → signed contracts."""
        return -size / self.contract_size

    price = staticmethod(reciprocal)
    """USD per coin → mirror price (1/P), and back."""

    @staticmethod
    def bar(open_: float, high: float, low: float, close: float) -> tuple[float, float, float, float]:
        """A bar in USD → the mirror's bar: 1/P, the high and low swapped."""
        return reciprocal(open_), reciprocal(low), reciprocal(high), reciprocal(close)

    @staticmethod
    def funding(total: float, at_open: float, rate: float, mark_open: float,
                mark_close: float) -> tuple[float, float, float]:
        """A bar's funding as the linear feed gives it → the mirror's ``(per unit, at the open,
        rate)``: :func:`btperp.inverse.mirror_funding` (its docstring: Σ rate / mark per USD of
        face value, the rates negated for the mirror's opposite side)."""
        per_unit, first, rate = mirror_funding(total, at_open, rate, mark_open, mark_close)
        return per_unit, first if first == first else 0.0, rate

    # --- the account's records, back to contracts and USD ----------------------------------

    def fill(self, f: Fill) -> Fill:
        return replace(f, side=_flip(f.side), size=self.contracts(f.size), price=reciprocal(f.price))

    def liquidation(self, x: Liquidation) -> Liquidation:
        r = reciprocal
        return replace(x, side=_flip(x.side), size=x.size / self.contract_size,
                       entry_price=r(x.entry_price), trigger_price=r(x.trigger_price),
                       fill_price=r(x.fill_price), bankruptcy_price=r(x.bankruptcy_price),
                       liquidation_price=r(x.liquidation_price), mark_price=r(x.mark_price),
                       last_price=r(x.last_price), remaining=x.remaining / self.contract_size)

    def funding_payment(self, p: FundingPayment) -> FundingPayment:
        # per_unit: what one contract long pays (contract size × Σ rate / mark)
        return replace(p, size=self.contracts(p.size), rate=-p.rate,
                       per_unit=-p.per_unit * self.contract_size)

    def margin_call(self, m: MarginCall) -> MarginCall:
        lp = m.liquidation_price
        return replace(m, mark_price=reciprocal(m.mark_price),
                       liquidation_price=None if lp is None else reciprocal(lp))


def _flip(side: str) -> str:
    return "short" if side == "long" else "long"


class MirrorPosition:
    """The account's view (the mirror: size Q, price 1/E, side flipped) of a backtrader ``Position``
    held in contracts at USD prices. The account updates the mirror; backtrader's position follows
    with the contracts and the USD entry, which for an increase is the contract-weighted harmonic
    mean of the fills (the mirror's average entry, 1/E, is their arithmetic mean), as Binance COIN-M
    and Bybit inverse average an entry."""

    __slots__ = ("held", "bt_pos", "mirror")

    def __init__(self, bt_pos, mirror: Mirror):
        self.bt_pos, self.mirror = bt_pos, mirror
        self.held = Holding(mirror.size(bt_pos.size), reciprocal(bt_pos.price) if bt_pos.size else 0.0)

    @property
    def size(self) -> float:
        return self.held.size

    @property
    def price(self) -> float:
        return self.held.price

    def update(self, size: float, price: float, dt=None) -> None:
        held, m = self.held, self.mirror
        held.update(size, price, dt)
        self.bt_pos.update(m.contracts(size), reciprocal(price), dt)
        self.bt_pos.size = m.contracts(held.size) if held.size else 0.0
        self.bt_pos.price = reciprocal(held.price) if held.size else 0.0


class InverseCommInfo(PerpCommInfo):
    """Inverse perpetual in backtrader: sizes in contracts of ``contract_size`` USD, amounts in the
    coin. PnL of ``size`` contracts from ``price`` to ``newprice`` = size × contract size ×
    (1/price − 1/newprice) (Bybit "P&L Calculations (Inverse Contracts)"; Binance COIN-M "How to
    Calculate Profit and Loss for Futures"); margin of one contract = contract size / price /
    leverage. Fees are charged by the broker.

    backtrader averages a trade's entry arithmetically, so ``trade.pnl`` of a trade that was
    increased at several prices is approximate; the broker's fills and wallet use the exchanges'
    (harmonic) average entry.
    """

    params = (("contract_size", 100.0),)

    def get_margin(self, price):
        """Initial margin in the coin of one contract at ``price``."""
        # Binance COIN-M "Leverage and Margin": initial margin = contracts × size / price / leverage.
        return self.p.contract_size / price / self.p.leverage_setting

    def getsize(self, price, cash):
        """Contracts whose value in the coin is ``cash`` at ``price``, down to the lot size."""
        return self.to_lots(cash * price / self.p.contract_size)

    def profitandloss(self, size, price, newprice):
        """PnL in the coin of ``size`` contracts (signed) from ``price`` to ``newprice``."""
        # Bybit "P&L Calculations (Inverse Contracts)": long = Q × (1/entry − 1/exit).
        return size * self.p.contract_size * (1.0 / price - 1.0 / newprice)

    def cashadjust(self, size, price, newprice):
        return self.profitandloss(size, price, newprice)


__all__ = ["Mirror", "MirrorPosition", "InverseCommInfo", "reciprocal"]
