"""Inverse (coin-margined) perpetuals: contracts of a fixed USD value, margin and PnL in the coin.

Pure core: no backtrader, no I/O. A position of ``contracts`` contracts of ``contract_size`` USD
each (face value ``Q`` = contracts × contract size, USD), entered at ``E`` and valued at ``P``
(USD per coin), has, in the coin (Binance "How to Calculate Liquidation Price of COIN-M Futures
Contracts" and "Leverage and Margin in Coin-Margined Futures Contracts"; Bybit "P&L Calculations
(Inverse Contracts)", "Initial Margin (Inverse Contract)")::

    position value  = Q / P
    unrealized PnL  = side × Q × (1/E − 1/P)
    initial margin  = Q / E / leverage
    funding         = side × Q × rate / mark           (paid when > 0)

**The mirror.** In the reciprocal price ``x = 1/P`` every one of these is the linear formula of a
position of the *opposite* side, of size ``Q``, entered at ``1/E``: its notional ``Q·x`` is the
position value in the coin, its PnL ``−side·Q·(x − 1/E)`` the inverse PnL, its initial margin
``Q·(1/E)/leverage``. The exchanges' inverse rules are their linear rules in that space: Binance
COIN-M's maintenance margin = position value at the mark × MMR − cum, the tier chosen by the
position value in the coin (its liquidation-price formula is Binance's USDⓈ-M one with ``Q``,
``1/E`` and ``1/LP``); Bybit inverse values the position at its entry (``Q/E``) and reserves the
fee to close at the bankruptcy price ``E·L/(L ± 1)`` = the mirror of ``(1/E)(1 ± 1/L)``. So this
module does not restate a formula: :func:`evaluate_inverse` hands :meth:`InversePosition.mirror`
to :func:`btperp.margin.evaluate` with the exchange's rulebook and maps the answers back
(``P = 1/x``). A liquidation settled in the mirror (:mod:`btperp.liquidation`) is the inverse one
too, with its fill at ``1/x``: that is how the broker can take inverse contracts later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from .errors import InputError
from .funding import funding_payment
from .margin import (AccountMargin, MarginMode, Position, PositionMargin, Side, evaluate,
                     maintenance_margin, unrealized_pnl)
from .rules import Rulebook, get_rulebook
from .symbols import to_inverse
from .tiers import TierTable


# --- elementary formulas (scalars or numpy arrays) -------------------------------------------

def position_value(contracts, contract_size, price):
    """Value in the coin of ``contracts`` contracts of ``contract_size`` USD at ``price``: Q / P."""
    # Binance COIN-M "Maintenance Margin": notional = contracts × contract size / mark price.
    return contracts * contract_size / price


def inverse_unrealized_pnl(side, contracts, contract_size, entry_price, price):
    """Unrealized PnL in the coin: side × Q × (1/entry − 1/price) (the mirror's linear PnL)."""
    # Bybit "P&L Calculations (Inverse Contracts)": long = Q × (1/entry − 1/exit), short = Q × (1/exit − 1/entry).
    return unrealized_pnl(-side, contracts * contract_size, 1.0 / entry_price, 1.0 / price)


def inverse_funding_payment(signed_contracts, contract_size, mark_price, rate):
    """What an inverse position pays at a funding event, in the coin (negative = it receives):
    contracts × contract size × rate / mark, signed like the position (longs pay a positive rate)."""
    # Binance "Introduction to Binance Futures Funding Rates" (COIN-M): funding = position value
    # in the coin (Q / mark) × rate; the linear payment of signed_contracts × contract size
    # "units" at the price 1/mark.
    return funding_payment(signed_contracts * contract_size, 1.0 / mark_price, rate)


# --- positions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class InversePosition:
    """One coin-margined position leg, as the margin formulas see it. Amounts in the coin."""

    symbol: str
    side: Side
    contracts: float
    """Number of contracts, > 0."""
    contract_size: float
    """USD per contract (Binance BTCUSD 100, other COIN-M 10; Bybit 1)."""
    entry_price: float
    """Average entry price, USD per coin."""
    mark_price: float
    leverage: float
    tiers: TierTable
    """Tier table, bounded in the coin (Binance: position value at the mark; Bybit: at entry)."""
    margin: float | None = None
    """Isolated margin in the coin. None: the initial margin."""

    @property
    def face_value(self) -> float:
        """contracts × contract size, USD."""
        return self.contracts * self.contract_size

    @property
    def entry_value(self) -> float:
        """Position value at the entry price, in the coin."""
        return self.face_value / self.entry_price

    def mirror(self) -> Position:
        """The linear position this one is in the reciprocal price (module docstring)."""
        return Position(self.symbol, Side(-int(self.side)), self.face_value, 1.0 / self.entry_price,
                        1.0 / self.mark_price, self.leverage, self.tiers, self.margin)


def _positive(value, field: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"must be a positive number, got {value!r}", field=field)
    return float(value)


def make_inverse_position(symbol: str, side, contracts: float, entry_price: float, *,
                          contract_size: float, tiers: TierTable, mark_price: float | None = None,
                          leverage: float | None = None, margin: float | None = None,
                          field_prefix: str = "") -> InversePosition:
    """A validated :class:`InversePosition` (``symbol`` as ``BTC/USD:BTC``); leverage is derived from
    ``margin`` (coin) when not given: position value at entry / margin."""
    p = field_prefix
    symbol = to_inverse(symbol, p + "symbol") if symbol else symbol
    side = Side.parse(side, p + "side")
    contracts = _positive(contracts, p + "contracts")
    contract_size = _positive(contract_size, p + "contract_size")
    entry_price = _positive(entry_price, p + "entry_price")
    mark_price = entry_price if mark_price is None else _positive(mark_price, p + "mark_price")
    if margin is not None:
        margin = _positive(margin, p + "margin")
    if leverage is None:
        if margin is None:
            raise InputError("give the leverage, or the isolated margin to derive it from",
                             field=p + "leverage")
        leverage = contracts * contract_size / entry_price / margin
    leverage = _positive(leverage, p + "leverage")
    return InversePosition(symbol, side, contracts, contract_size, entry_price, mark_price, leverage,
                           tiers, margin)


def inverse_rulebook(exchange: "str | Rulebook") -> Rulebook:
    """The rulebook of a coin-margined exchange (``binance-coinm``, ``bybit-inverse``), or an error."""
    rulebook = get_rulebook(exchange, core=True)
    if not rulebook.inverse:
        raise InputError(f"{rulebook.name} is a linear (USDT/USDC-margined) rulebook; coin-margined "
                         f"contracts take binance-coinm or bybit-inverse", field="exchange")
    return rulebook


def inverse_maintenance_margin(exchange: "str | Rulebook", pos: InversePosition, price: float,
                               taker_fee: float) -> float:
    """Maintenance margin in the coin of an inverse position valued at ``price`` (its tier there)."""
    return maintenance_margin(inverse_rulebook(exchange), pos.mirror(), 1.0 / price, taker_fee)


# --- results ------------------------------------------------------------------------------------

def _back(x: float | None) -> float | None:
    """A mirrored price back in USD per coin."""
    return None if x is None else 1.0 / x


@dataclass(frozen=True)
class InversePositionMargin:
    """Margin state of one inverse position at its mark price. Amounts in the coin ``settle``,
    prices in USD per coin, rates as fractions."""

    symbol: str
    settle: str
    side: Side
    contracts: float
    contract_size: float
    entry_price: float
    mark_price: float
    leverage: float
    position_value: float
    """Value in the coin at the mark: contracts × contract size / mark."""
    tier: int
    maintenance_margin_rate: float
    maintenance_amount: float
    initial_margin: float
    maintenance_margin: float
    unrealized_pnl: float
    margin_balance: float
    margin_ratio: float
    liquidation_price: float | None
    liquidation_tier: int | None
    bankruptcy_price: float | None
    margin: float | None = None

    @property
    def face_value(self) -> float:
        return self.contracts * self.contract_size

    @property
    def distance_to_liquidation_pct(self) -> float | None:
        if self.liquidation_price is None:
            return None
        return abs(self.mark_price - self.liquidation_price) / self.mark_price * 100.0

    @property
    def liquidated(self) -> bool:
        return self.margin_ratio >= 1.0

    @classmethod
    def from_mirror(cls, pos: InversePosition, m: PositionMargin, settle: str) -> "InversePositionMargin":
        """The linear result of ``pos.mirror()`` read back: prices inverted, amounts as they are."""
        return cls(pos.symbol, settle, pos.side, pos.contracts, pos.contract_size, pos.entry_price,
                   pos.mark_price, pos.leverage, m.notional, m.tier, m.maintenance_margin_rate,
                   m.maintenance_amount, m.initial_margin, m.maintenance_margin, m.unrealized_pnl,
                   m.margin_balance, m.margin_ratio, _back(m.liquidation_price), m.liquidation_tier,
                   _back(m.bankruptcy_price), m.margin)


def settle_coin(symbol: str) -> str:
    """The coin a coin-margined symbol settles in: ``BTC/USD:BTC`` → ``BTC``."""
    return symbol.rsplit(":", 1)[-1] if ":" in symbol else symbol.split("/")[0]


def evaluate_inverse(exchange: "str | Rulebook", positions: Iterable[InversePosition], *,
                     margin_mode: "str | MarginMode" = MarginMode.ISOLATED,
                     wallet_balance: float | None = None, taker_fee: float | None = None,
                     hedge_mode: bool = False) -> AccountMargin:
    """Margin state of coin-margined ``positions`` on ``exchange``, amounts in the coin.

    As :func:`btperp.margin.evaluate` (isolated, or cross on a ``wallet_balance`` in the coin; one
    position per symbol unless ``hedge_mode``), solved on the mirrors (module docstring). In cross
    margin every position must settle in the same coin: a coin-margined wallet is one coin's.
    The answer's ``positions`` are :class:`InversePositionMargin`.
    """
    rulebook = inverse_rulebook(exchange)
    positions = list(positions)
    for i, p in enumerate(positions):
        if not isinstance(p, InversePosition):
            raise InputError(f"expected an InversePosition, got {type(p).__name__}", field=f"positions[{i}]")
    mode = MarginMode.parse(margin_mode)
    coins = [settle_coin(p.symbol) for p in positions]
    if mode is MarginMode.CROSS and len(set(coins)) > 1:
        raise InputError(f"cross margin is per coin: positions settle in {', '.join(sorted(set(coins)))}; "
                         f"evaluate each coin's wallet on its own", field="positions")
    linear = evaluate(rulebook, [p.mirror() for p in positions], margin_mode=mode,
                      wallet_balance=wallet_balance, taker_fee=taker_fee, hedge_mode=hedge_mode,
                      _mirrored=True)
    results = tuple(InversePositionMargin.from_mirror(p, m, c)
                    for p, m, c in zip(positions, linear.positions, coins))
    return AccountMargin(linear.exchange, linear.margin_mode, linear.wallet_balance, results,
                         linear.margin_balance, linear.maintenance_margin, linear.margin_ratio,
                         linear.taker_fee)


def inverse_liquidation_price(exchange: "str | Rulebook", side, contracts: float, entry_price: float, *,
                              contract_size: float, tiers: TierTable, leverage: float | None = None,
                              margin: float | None = None, taker_fee: float | None = None) -> float | None:
    """Liquidation price of one isolated inverse position (USD per coin)."""
    pos = make_inverse_position("", side, contracts, entry_price, contract_size=contract_size, tiers=tiers,
                                leverage=leverage, margin=margin)
    return evaluate_inverse(exchange, [pos], taker_fee=taker_fee).positions[0].liquidation_price


def inverse_bankruptcy_price(exchange: "str | Rulebook", side, contracts: float, entry_price: float, *,
                             contract_size: float, tiers: TierTable, leverage: float | None = None,
                             margin: float | None = None, taker_fee: float | None = None) -> float | None:
    """Bankruptcy price of one isolated inverse position (USD per coin)."""
    pos = make_inverse_position("", side, contracts, entry_price, contract_size=contract_size, tiers=tiers,
                                leverage=leverage, margin=margin)
    return evaluate_inverse(exchange, [pos], taker_fee=taker_fee).positions[0].bankruptcy_price


__all__ = ["InversePosition", "InversePositionMargin", "make_inverse_position", "evaluate_inverse",
           "inverse_liquidation_price", "inverse_bankruptcy_price", "inverse_maintenance_margin",
           "inverse_rulebook", "inverse_unrealized_pnl", "inverse_funding_payment", "position_value",
           "settle_coin"]
