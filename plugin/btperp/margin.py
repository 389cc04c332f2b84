"""Margin math: initial and maintenance margin, equity, margin ratio, liquidation and bankruptcy price.

Pure core: no backtrader, no I/O. Each exchange's specifics come from its rulebook
(:mod:`btperp.rules`); this module solves the one equation all of them share.

A position is liquidated when its margin balance (equity) falls to its maintenance margin:

    equity(P) = E_fixed + Σ_i side_i × size_i × (P − entry_i)        (linear in the price P)
    MM(P)     = Σ_i fixed_i(tier_i) + per_price_i(tier_i) × P       (affine within a tier)

over the legs ``i`` that move with the price P (one position; in Binance hedge mode the long and
the short of the same symbol in cross margin). ``E_fixed`` is the isolated margin (isolated) or,
in cross margin, the wallet balance plus the unrealized PnL minus the maintenance margin of every
other symbol at its mark. Solving equity(P) = MM(P) within a tier gives

    P = (E_fixed − Σ side_i size_i entry_i − Σ fixed_i) / (Σ per_price_i − Σ side_i size_i)

which, with fixed = −cum and per_price = size × MMR, is exactly Binance's published formula
"How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"
(LP = [WB − TMM1 + UPNL1 + cum − side·pos·EP] / [pos·MMR − side·pos], hedge terms included).

Tiers: the MMR and cum that apply are those of the notional *at the liquidation price*
(Binance's note: "if the position at the liquidation price and the current position are of
different levels, substitute the level at the liquidation price"). Instead of iterating (which can
oscillate) :func:`solve_price` walks the price intervals between tier boundaries and keeps the
root that lies inside its own interval, which is consistent by construction; maintenance margin is
continuous across tiers (:mod:`btperp.tiers`), so the root is unique for a single position.

The bankruptcy price is where equity falls to what the exchange reserves for closing (Bybit's fee
to close; 0 on Binance and Hyperliquid): the same solve with no tiers.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Iterable, Sequence

import numpy as np

from .choice import Choice
from .errors import InputError, LeverageError
from .rules import Rulebook, get_rulebook
from .tiers import Tier, TierTable


class Side(IntEnum):
    """Direction of a position; the value is the sign used in every formula."""

    LONG = 1
    SHORT = -1

    @classmethod
    def parse(cls, value: "str | int | Side", field: str = "side") -> "Side":
        if isinstance(value, Side):
            return value
        text = str(value).strip().lower()
        if text in ("long", "buy", "1", "+1"):
            return cls.LONG
        if text in ("short", "sell", "-1"):
            return cls.SHORT
        raise InputError(f"must be 'long' or 'short', got {value!r}", field=field)

    def __str__(self) -> str:
        return self.name.lower()


class MarginMode(Choice):
    """Isolated: each position has its own margin. Cross: all positions share the wallet."""

    ISOLATED = "isolated"
    CROSS = "cross"


# --- elementary formulas (scalars or numpy arrays) -------------------------------------------

def unrealized_pnl(side, size, entry_price, price):
    """Unrealized PnL (USDT) of a linear position valued at ``price``: side × size × (price − entry)."""
    # Binance "How to Calculate Profit and Loss for Futures" (USDⓈ-M: PnL = size × (mark − entry) × side);
    # Bybit "P&L Calculations (USDT Contract)"; Hyperliquid "Margining" (unrealized PnL at mark).
    return np.multiply(np.multiply(side, size), np.subtract(price, entry_price))


def max_open_size(available: float, price: float, leverage: float, taker_fee: float,
                  max_notional: float = math.inf, extra_per_unit: float = 0.0) -> float:
    """Units an available balance can open at ``price``: initial margin plus the opening fee use it
    all, and the position stays within ``max_notional`` (the tier cap at this leverage).

    Binance "Leverage and Margin of USDⓈ-M Futures": initial margin = notional / leverage; the fee
    is charged on the notional at the taker rate (what :class:`btperp.bt.PerpBroker` checks).
    ``extra_per_unit``: what the exchange's initial margin adds per unit (Bybit's fee to close).
    """
    if not (price > 0 and leverage > 0):
        raise ValueError(f"price and leverage must be positive, got {price} and {leverage}")
    size = max(available, 0.0) / (price * (1.0 / leverage + taker_fee) + extra_per_unit)
    return max(0.0, min(size, max_notional / price))


def margin_ratio(maintenance_margin, margin_balance):
    """Maintenance margin / margin balance (Binance's "margin ratio"): liquidation at 1.

    A balance at or below zero gives ``inf``.
    """
    mm = np.asarray(maintenance_margin, dtype=float)
    bal = np.asarray(margin_balance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bal > 0, mm / np.where(bal > 0, bal, 1.0), np.inf)
    return float(ratio) if ratio.ndim == 0 else ratio


def linear_root(const, slope):
    """The price P where ``const + slope × P = 0`` (NaN where the slope is 0)."""
    const = np.asarray(const, dtype=float)
    slope = np.asarray(slope, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(slope != 0, -const / np.where(slope != 0, slope, 1.0), np.nan)
    return float(root) if root.ndim == 0 else root


# --- positions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    """One position leg, as the margin formulas see it."""

    symbol: str
    side: Side
    size: float
    """Absolute size in base units (BTC, ETH), > 0."""
    entry_price: float
    """Average entry price, USDT."""
    mark_price: float
    """Mark price it is valued at, USDT."""
    leverage: float
    """Leverage setting (initial margin = notional at entry / leverage)."""
    tiers: TierTable
    """Tier table in force for this symbol."""
    margin: float | None = None
    """Isolated margin (USDT): the isolated wallet balance of the position. None: initial margin."""

    @property
    def entry_notional(self) -> float:
        """Notional at the entry price, USDT."""
        return self.size * self.entry_price


def _require_positive(value, field: str) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"must be a positive number, got {value!r}", field=field)


def make_position(symbol: str, side, size: float, entry_price: float, *, tiers: TierTable,
                  mark_price: float | None = None, leverage: float | None = None,
                  margin: float | None = None, field_prefix: str = "") -> Position:
    """A validated :class:`Position`; leverage is derived from ``margin`` when not given."""
    p = field_prefix
    side = Side.parse(side) if not isinstance(side, Side) else side
    _require_positive(size, p + "size")
    _require_positive(entry_price, p + "entry_price")
    mark_price = entry_price if mark_price is None else mark_price
    _require_positive(mark_price, p + "mark_price")
    if margin is not None:
        _require_positive(margin, p + "margin")
    if leverage is None:
        if margin is None:
            raise InputError("give the leverage, or the isolated margin to derive it from",
                             field=p + "leverage")
        leverage = size * entry_price / margin
    _require_positive(leverage, p + "leverage")
    return Position(symbol, side, float(size), float(entry_price), float(mark_price),
                    float(leverage), tiers, None if margin is None else float(margin))


def check_leverage(rulebook: Rulebook, pos: Position, field_name: str = "leverage") -> Tier:
    """The tier of the position's notional at entry; :class:`LeverageError` if leverage exceeds it."""
    measure = rulebook.tier_notional(pos.size, pos.entry_price, pos.entry_price)
    tier = pos.tiers.lookup(measure)
    if pos.leverage > tier.max_leverage * (1 + 1e-12):
        what = (f"a notional of {pos.entry_notional:,.2f}" if rulebook.tier_basis == "notional"
                else f"a {rulebook.tier_basis} of {float(measure):,.6g}")
        raise LeverageError(f"{pos.leverage:g}x is above the {tier.max_leverage:g}x that tier "
                            f"{tier.tier} allows for {what}", field=field_name)
    return tier


def tier_of(rulebook: Rulebook, pos: Position, price: float) -> Tier:
    """The tier a position is in when valued at ``price``."""
    return pos.tiers.lookup(rulebook.tier_notional(pos.size, pos.entry_price, price))


def maintenance_margin(rulebook: Rulebook, pos: Position, price: float, taker_fee: float) -> float:
    """Maintenance margin (USDT) of a position valued at ``price``, in the tier of that price."""
    tier = tier_of(rulebook, pos, price)
    return float(rulebook.maintenance_margin(pos.side, pos.size, pos.entry_price, price, pos.leverage,
                                             tier, taker_fee))


def maintenance_margin_array(rulebook: Rulebook, table: TierTable, side, size, entry_price, price,
                             leverage, taker_fee: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`maintenance_margin`: (0-based tier index, maintenance margin) of arrays of
    positions valued at ``price``, all under one tier ``table``; the rulebook's own formula per tier."""
    side, size, entry_price, price, leverage = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (side, size, entry_price, price, leverage)))
    index = table.lookup_index(rulebook.tier_notional(size, entry_price, price))
    mm = np.empty(index.shape)
    for k in np.unique(index):
        rows = index == k
        fixed, per_price = rulebook.maintenance_terms(side[rows], size[rows], entry_price[rows],
                                                      leverage[rows], table.tiers[k], taker_fee)
        mm[rows] = fixed + per_price * price[rows]
    return index, mm


def isolated_margin(rulebook: Rulebook, pos: Position, taker_fee: float) -> float:
    """The position's isolated margin: as given, or its initial margin."""
    if pos.margin is not None:
        return pos.margin
    return float(rulebook.initial_margin(pos.side, pos.size, pos.entry_price, pos.leverage, taker_fee))


def solve_price(rulebook: Rulebook, legs: Sequence[Position], fixed_equity: float, taker_fee: float,
                reference_price: float, *, bankruptcy: bool = False,
                ratio: float = 1.0) -> float | None:
    """The price of ``legs``' symbol at which equity meets maintenance margin (or bankruptcy).

    ``legs`` move together with the price; ``fixed_equity`` is what does not (module docstring).
    ``ratio`` < 1 gives instead the price where the margin ratio (MM / equity) reaches ``ratio``
    (a margin call level): equity = MM / ratio. Returns the root nearest to ``reference_price``
    (the current mark), or None when no positive price gets there (a long with more margin than
    notional, say).
    """
    lin_const = fixed_equity - sum(float(l.side) * l.size * l.entry_price for l in legs)
    lin_slope = sum(float(l.side) * l.size for l in legs)
    if bankruptcy:
        reserve = sum(float(rulebook.bankruptcy_reserve(l.side, l.size, l.entry_price, l.leverage,
                                                        taker_fee)) for l in legs)
        return _nearest([(_root(lin_const - reserve, lin_slope), 0.0, math.inf)], reference_price)
    cuts = sorted({0.0, *(b for l in legs for b in rulebook.tier_breakpoints(l.size, l.entry_price,
                                                                             l.tiers))})
    bounds = list(zip(cuts, cuts[1:] + [math.inf]))

    def interval(k: int) -> tuple[float, float, float]:
        """Root of equity = MM / ratio with the tiers of interval ``k``, and the interval."""
        lo, hi = bounds[k]
        probe = (lo + hi) / 2 if math.isfinite(hi) else lo * 2 + 1.0
        fixed = per_price = 0.0
        for l in legs:
            f, s = rulebook.maintenance_terms(l.side, l.size, l.entry_price, l.leverage,
                                              tier_of(rulebook, l, probe), taker_fee)
            fixed += float(f)
            per_price += float(s)
        return _root(lin_const - fixed / ratio, lin_slope - per_price / ratio), lo, hi

    if len(legs) == 1 and _monotonic(rulebook, legs[0], taker_fee, ratio):
        # One position whose equity moves by ±size per unit of price and MM / ratio by less in
        # every tier: equity − MM / ratio is monotonic and its root unique. Walk from the
        # reference price's interval towards it (usually one or two) instead of solving every one.
        k = max(bisect.bisect_right(cuts, reference_price) - 1, 0)
        for _ in bounds:
            root, lo, hi = interval(k)
            if not math.isfinite(root):
                break
            tol = 1e-12 * max(1.0, abs(root))
            if root < lo - tol and k > 0:
                k -= 1
            elif root > hi + tol and k < len(bounds) - 1:
                k += 1
            else:
                return _nearest([(root, lo, hi)], reference_price)
    return _nearest([interval(k) for k in range(len(bounds))], reference_price)


def solve_price_array(rulebook: Rulebook, table: TierTable, side, size, entry_price, leverage,
                      fixed_equity, taker_fee: float, reference_price=None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`solve_price` for arrays of single positions under one tier ``table``.

    Returns (liquidation price, 0-based tier index at that price); NaN and −1 where no positive
    price liquidates. Same equation as the scalar solve (module docstring, Binance's LP formula):
    within each tier's price interval the root of ``fixed_equity + side × size × (P − entry) =
    MM(P)`` with the rulebook's own terms, kept where it lies inside its interval (nearest to
    ``reference_price``, default the entry price, if several do).
    """
    side, size, entry_price, leverage, fixed_equity = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (side, size, entry_price, leverage, fixed_equity)))
    ref = entry_price if reference_price is None else np.broadcast_to(
        np.asarray(reference_price, dtype=float), side.shape)
    const = fixed_equity - side * size * entry_price
    slope = side * size
    best = np.full(side.shape, np.nan)
    best_k = np.full(side.shape, -1, dtype=np.int64)
    if not rulebook.tiers_from_price:           # one tier for the whole price axis (Bybit: at entry)
        index = table.lookup_index(rulebook.tier_notional(size, entry_price, entry_price))
        for k in np.unique(index):
            rows = index == k
            fixed, per_price = rulebook.maintenance_terms(side[rows], size[rows], entry_price[rows],
                                                          leverage[rows], table.tiers[k], taker_fee)
            root = linear_root(const[rows] - fixed, slope[rows] - per_price)
            ok = np.isfinite(root) & (root > 0)
            best[rows] = np.where(ok, root, np.nan)
            best_k[rows] = np.where(ok, k, -1)
        return best, best_k
    distance = np.full(side.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, tier in enumerate(table.tiers):
            fixed, per_price = rulebook.maintenance_terms(side, size, entry_price, leverage, tier,
                                                          taker_fee)
            root = linear_root(const - fixed, slope - per_price)
            lo = tier.min_notional / size
            hi = table.tiers[k + 1].min_notional / size if k + 1 < len(table.tiers) else np.inf
            tol = 1e-12 * np.maximum(1.0, np.abs(root))
            ok = np.isfinite(root) & (root > 0) & (root >= lo - tol) & (root <= hi + tol)
            gap = np.abs(root - ref)
            take = ok & (gap < distance)
            best = np.where(take, root, best)
            best_k = np.where(take, k, best_k)
            distance = np.where(take, gap, distance)
    return best, best_k


def _monotonic(rulebook: Rulebook, leg: Position, taker_fee: float, ratio: float) -> bool:
    """Whether MM / ratio grows slower than the equity of ``leg`` in every tier. Rates never fall
    from one tier to the next (tables are validated), so the last tier has the steepest MM."""
    _, steepest = rulebook.maintenance_terms(leg.side, leg.size, leg.entry_price, leg.leverage,
                                             leg.tiers.tiers[-1], taker_fee)
    return abs(float(steepest)) / ratio < leg.size


def _root(const: float, slope: float) -> float:
    """Scalar :func:`linear_root`."""
    return -const / slope if slope != 0 else math.nan


def _nearest(candidates, reference_price: float) -> float | None:
    """The positive root inside its own interval nearest to ``reference_price`` (None if none)."""
    found = []
    for root, lo, hi in candidates:
        tol = 1e-12 * max(1.0, abs(root)) if math.isfinite(root) else 0.0
        if math.isfinite(root) and root > 0 and lo - tol <= root <= hi + tol:
            found.append(root)
    if not found:
        return None
    return min(found, key=lambda r: (abs(r - reference_price), r))


# --- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PositionMargin:
    """Margin state of one position at its mark price. Amounts in USDT, rates as fractions."""

    symbol: str
    side: Side
    size: float
    entry_price: float
    mark_price: float
    leverage: float
    notional: float
    """Notional at the mark price."""
    tier: int
    """Tier of the notional at the mark price."""
    maintenance_margin_rate: float
    maintenance_amount: float
    initial_margin: float
    """Initial margin at entry (notional at entry / leverage, plus rule-specific reserves)."""
    maintenance_margin: float
    """Maintenance margin at the mark price."""
    unrealized_pnl: float
    """Unrealized PnL at the mark price."""
    margin_balance: float
    """Isolated: margin + unrealized PnL. Cross: the account's margin balance."""
    margin_ratio: float
    """Maintenance margin / margin balance (the account's in cross margin); 1 = liquidation."""
    liquidation_price: float | None
    """Mark price at which the position is liquidated; None if no positive price liquidates it."""
    liquidation_tier: int | None
    """Tier of the notional at the liquidation price (it can differ from ``tier``)."""
    bankruptcy_price: float | None
    """Mark price at which the position's margin is exhausted; None if never."""
    margin: float | None = None
    """Isolated margin (isolated mode)."""

    @property
    def distance_to_liquidation_pct(self) -> float | None:
        """How far the mark must move to reach the liquidation price, percent of the mark."""
        if self.liquidation_price is None:
            return None
        return abs(self.mark_price - self.liquidation_price) / self.mark_price * 100.0

    @property
    def liquidated(self) -> bool:
        """True when the position is at or past its liquidation point at the mark price."""
        return self.margin_ratio >= 1.0


@dataclass(frozen=True)
class AccountMargin:
    """Margin state of an account: every position, and the account totals."""

    exchange: str
    margin_mode: MarginMode
    wallet_balance: float | None
    positions: tuple[PositionMargin, ...]
    margin_balance: float
    """Cross: wallet + Σ unrealized PnL. Isolated: Σ (margin + unrealized PnL)."""
    maintenance_margin: float
    """Σ maintenance margin at mark."""
    margin_ratio: float
    """Cross: the account's ratio. Isolated: the highest (worst) ratio of any position."""
    taker_fee: float = field(default=0.0)

    @property
    def liquidated(self) -> bool:
        return self.margin_ratio >= 1.0


def evaluate(exchange: "str | Rulebook", positions: Iterable[Position], *,
             margin_mode: "str | MarginMode" = MarginMode.ISOLATED, wallet_balance: float | None = None,
             taker_fee: float | None = None, hedge_mode: bool = False,
             _mirrored: bool = False) -> AccountMargin:
    """Margin state of ``positions`` on ``exchange`` at their mark prices.

    Isolated: each position stands alone on its ``margin`` (default: its initial margin).
    Cross: all positions share ``wallet_balance``; a symbol's liquidation price holds the other
    symbols at their marks (Binance's TMM1 and UPNL1). One-way mode allows one position per
    symbol; ``hedge_mode`` allows a long and a short of the same symbol (Binance hedge mode),
    which in cross margin share one liquidation price.
    """
    rulebook = _linear(get_rulebook(exchange, core=True), _mirrored)
    mode = MarginMode.parse(margin_mode)
    fee = _taker_fee(rulebook, taker_fee)
    positions = list(positions)
    seen: dict[tuple[str, Side], int] = {}
    for i, pos in enumerate(positions):
        key = (pos.symbol, pos.side) if hedge_mode else (pos.symbol, Side.LONG)
        if key in seen:
            what = f"a second {pos.side} of" if hedge_mode else "a second position in"
            raise InputError(f"{what} {pos.symbol} (position {seen[key]} already holds it); "
                             f"{'merge them' if hedge_mode else 'one-way mode holds one position per symbol'}",
                             field=f"positions[{i}]")
        seen[key] = i

    upnl = [float(unrealized_pnl(float(p.side), p.size, p.entry_price, p.mark_price)) for p in positions]
    mm = [maintenance_margin(rulebook, p, p.mark_price, fee) for p in positions]
    im = [float(rulebook.initial_margin(p.side, p.size, p.entry_price, p.leverage, fee))
          for p in positions]

    results = []
    if mode is MarginMode.ISOLATED:
        for p, u, m, i0 in zip(positions, upnl, mm, im):
            own = isolated_margin(rulebook, p, fee)
            balance = own + u
            lp = solve_price(rulebook, [p], own, fee, p.mark_price)
            bp = solve_price(rulebook, [p], own, fee, p.mark_price, bankruptcy=True)
            results.append(_result(rulebook, p, u, m, i0, balance, margin_ratio(m, balance), lp, bp,
                                   own))
        total_balance = sum(r.margin_balance for r in results)
        total_mm = sum(mm)
        worst = max((r.margin_ratio for r in results), default=0.0)
        return AccountMargin(rulebook.name, mode, wallet_balance, tuple(results), total_balance,
                             total_mm, worst, fee)

    if wallet_balance is None or not math.isfinite(wallet_balance):
        raise InputError("cross margin needs the wallet balance", field="wallet_balance")
    balance = wallet_balance + sum(upnl)
    ratio = margin_ratio(sum(mm), balance)
    for p, u, m, i0 in zip(positions, upnl, mm, im):
        group = [q for q in positions if q.symbol == p.symbol]
        others = [(u2, m2) for q, u2, m2 in zip(positions, upnl, mm) if q.symbol != p.symbol]
        # Binance: WB − TMM1 + UPNL1 (other contracts at their marks).
        fixed = wallet_balance + sum(u2 - m2 for u2, m2 in others)
        lp = solve_price(rulebook, group, fixed, fee, p.mark_price)
        bp = solve_price(rulebook, group, wallet_balance + sum(u2 for u2, _ in others), fee,
                         p.mark_price, bankruptcy=True)
        results.append(_result(rulebook, p, u, m, i0, balance, ratio, lp, bp, None))
    return AccountMargin(rulebook.name, mode, wallet_balance, tuple(results), balance, sum(mm), ratio,
                         fee)


def _result(rulebook, p: Position, u, m, i0, balance, ratio, lp, bp, own) -> PositionMargin:
    tier = tier_of(rulebook, p, p.mark_price)
    lp_tier = tier_of(rulebook, p, lp).tier if lp is not None else None
    return PositionMargin(p.symbol, p.side, p.size, p.entry_price, p.mark_price, p.leverage,
                          p.size * p.mark_price, tier.tier, tier.maintenance_margin_rate,
                          tier.maintenance_amount, i0, m, u, balance, ratio, lp, lp_tier, bp, own)


def liquidation_price(exchange: "str | Rulebook", side, size: float, entry_price: float, *,
                      tiers: TierTable, leverage: float | None = None, margin: float | None = None,
                      taker_fee: float | None = None) -> float | None:
    """Liquidation price of one isolated position (the traders' calculator)."""
    rulebook = _linear(get_rulebook(exchange, core=True))
    pos = make_position("", side, size, entry_price, tiers=tiers, leverage=leverage, margin=margin)
    fee = _taker_fee(rulebook, taker_fee)
    return solve_price(rulebook, [pos], isolated_margin(rulebook, pos, fee), fee, entry_price)


def bankruptcy_price(exchange: "str | Rulebook", side, size: float, entry_price: float, *,
                     tiers: TierTable, leverage: float | None = None, margin: float | None = None,
                     taker_fee: float | None = None) -> float | None:
    """Bankruptcy price (margin exhausted) of one isolated position."""
    rulebook = _linear(get_rulebook(exchange, core=True))
    pos = make_position("", side, size, entry_price, tiers=tiers, leverage=leverage, margin=margin)
    fee = _taker_fee(rulebook, taker_fee)
    return solve_price(rulebook, [pos], isolated_margin(rulebook, pos, fee), fee, entry_price,
                       bankruptcy=True)


def _linear(rulebook: Rulebook, mirrored: bool = False) -> Rulebook:
    """The rulebook, if it is for linear contracts (or the caller passes inverse mirrors)."""
    if rulebook.inverse and not mirrored:
        raise InputError(f"{rulebook.name} is for coin-margined contracts, sized in contracts: use "
                         f"btperp.inverse (make_inverse_position, evaluate_inverse)", field="exchange")
    return rulebook


def _taker_fee(rulebook: Rulebook, taker_fee: float | None) -> float:
    """The taker fee given, else the rulebook's standard rate (the generic rulebook has none)."""
    if taker_fee is not None:
        return float(taker_fee)
    if rulebook.taker_fee is None:
        raise InputError(f"{rulebook.name} has no standard fee: give the taker fee rate", field="taker_fee")
    return float(rulebook.taker_fee)


__all__ = ["Side", "MarginMode", "Position", "PositionMargin", "AccountMargin", "make_position",
           "evaluate", "liquidation_price", "bankruptcy_price", "solve_price", "solve_price_array",
           "check_leverage",
           "maintenance_margin", "maintenance_margin_array", "isolated_margin", "unrealized_pnl", "margin_ratio",
           "linear_root", "tier_of"]
