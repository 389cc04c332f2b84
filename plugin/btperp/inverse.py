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
too, with its fill at ``1/x``: that is how the broker (:mod:`btperp.bt.inverse`) and the audit
(:func:`mirror_frame`) take inverse contracts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

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


def mirror_funding(total, at_open, rate, mark_open, mark_close):
    """A bar's funding as a linear feed gives it → the mirror's (per unit, at the open, rate).
    Scalars or numpy arrays; NaN (no event) stays NaN.

    ``total`` = Σ rate × mark over the bar's events, ``at_open`` the part at its open (NaN: none),
    ``rate`` = Σ rate, marks in USD. An inverse position pays Σ rate / mark per USD of face value
    (Binance "Introduction to Binance Futures Funding Rates", COIN-M: funding = position value in
    the coin × rate; Bybit "Funding Fee Calculation", inverse: position value = contracts / mark).
    The event at the open is at ``mark_open``; the later part's mark is ``total_later /
    rate_later`` (exact for one later event in the bar; several: their rate-weighted mark), else
    ``mark_close``. The mirror has the opposite side, so its rates are negated: it pays
    (−side·Q) × (−Σ rate/mark) = side·Q·Σ rate/mark, a long paying a positive rate.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(at_open == at_open, at_open, 0.0)
        r_open = np.where(first != 0, first / mark_open, 0.0)
        inv_first = r_open / mark_open
        later = total - first
        r_later = rate - r_open
        by_rate = (r_later == r_later) & (r_later != 0) & (later / np.where(r_later != 0, r_later, 1.0) > 0)
        inv_later = np.where(later != 0, np.where(by_rate, r_later * r_later / np.where(later != 0, later, 1.0),
                                                  later / (mark_close * mark_close)), 0.0)
        inv_later = np.where(later == later, inv_later, np.nan)
    per_unit, open_part = -(inv_first + inv_later), -inv_first
    if np.ndim(per_unit) == 0:
        return float(per_unit), float(open_part), -rate
    return per_unit, np.where(at_open == at_open, open_part, np.nan), -rate


def mirror_prices(open_, high, low, close):
    """A bar (or arrays of bars) in USD → the mirror's: 1/P, the high and low swapped."""
    with np.errstate(divide="ignore"):
        return (np.divide(1.0, open_), np.divide(1.0, low), np.divide(1.0, high), np.divide(1.0, close))


def mirror_frame(frame):
    """A :func:`btperp.load`-shaped frame of a coin-margined symbol (prices in USD) → the frame of
    its mirror (prices 1/P with high and low swapped, for last and mark prices; funding as
    :func:`mirror_funding`), which :mod:`btperp.replay` replays with the linear formulas."""
    out = frame.copy()
    for prefix in ("", "mark_"):
        cols = [prefix + c for c in ("open", "high", "low", "close")]
        if all(c in frame for c in cols):
            o, h, lo, c = mirror_prices(*(frame[c].to_numpy(float) for c in cols))
            for name, values in zip(cols, (o, h, lo, c)):
                out[name] = values
    if "funding_per_unit" in frame and "funding_rate" in frame:
        mo = frame["mark_open"].to_numpy(float)
        mc = frame["mark_close"].to_numpy(float)
        at_open = (frame["funding_open_per_unit"].to_numpy(float) if "funding_open_per_unit" in frame
                   else np.full(len(frame), np.nan))
        total, first, rate = mirror_funding(frame["funding_per_unit"].to_numpy(float), at_open,
                                            frame["funding_rate"].to_numpy(float), mo, mc)
        out["funding_per_unit"], out["funding_open_per_unit"], out["funding_rate"] = total, first, rate
    out.attrs = dict(frame.attrs)
    return out


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
           "settle_coin", "mirror_funding", "mirror_prices", "mirror_frame"]
