"""A perpetual-futures account, bar by bar: the pure core behind :class:`btperp.bt.PerpBroker`.

No backtrader here: the broker (:mod:`btperp.bt.broker`) translates backtrader's orders, lines and
notifications into calls on an :class:`Account` and back; everything that moves money or decides
when something happens inside a bar is in this module.

The account (settlement currency, USDT)
    * **wallet** = cash deposited + realized PnL − fees − funding (Binance "wallet balance"),
      isolated margins included;
    * each isolated position holds an **isolated margin** (initial margin at the fills, plus
      :meth:`Account.add_margin`, minus the funding it paid);
    * the **cross wallet** is the wallet minus the isolated margins; cross positions share it;
    * the **available balance** = cross wallet + cross unrealized PnL − cross positions' initial
      margin at their marks (Binance "available balance").

Coin-margined (inverse) contracts: the account is given their mirror (:mod:`btperp.inverse`: a
linear position of the opposite side, size contracts × contract size, prices 1/P, amounts in the
coin) by its adapter (:mod:`btperp.bt.inverse`), and computes with the linear formulas unchanged.

One :class:`Leg` per instrument holds its position (any object with ``size``, ``price`` and
``update(size, price, dt)``: backtrader's ``Position``, or :class:`Holding`), its margin, the
trade's fees and funding, the tier table in force, and what the account knows of the current bar
(its trigger-series open, high, low, close and mark close, and the bar time since which the
position has its current state).

A bar's events, in the order :mod:`btperp.intrabar` gives them (the adapter calls these):
    1. :meth:`Account.new_bar` for each leg with a new bar, then :meth:`Account.open_bar`: funding
       events at the bar's open, paid by the positions held then; a position whose trigger
       series opens beyond its liquidation price is liquidated at the open (a gap);
    2. each fill at its bar time ``t``: :meth:`Account.check` up to ``t`` first (what the path
       reaches first happens first, so a liquidation cancels a later order), then
       :meth:`Account.fill`;
    3. :meth:`Account.close_bar`: funding events later in the bar, paid by the positions held
       after the fills; liquidations on the rest of the path; margin calls.
Liquidations and margin calls are reported to the account's :class:`Listener` as they happen.
With ``Instrument.liquidation="partial"`` (the broker's default; the account's is ``full``) a
position that alone moves its equity (isolated, or the only cross position) is first reduced by
its exchange's rule (:func:`btperp.liquidation.partial_step`): each step is a :class:`Liquidation`
record with ``partial=True``, and the remainder is checked again from the step's bar time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from .errors import InputError
from .intrabar import END, Intrabar, Path, first_touch, low_first, value_at, vertices, window_extreme
from .liquidation import (FillPolicy, GroupLeg, LiquidationMode, Settlement, Step, bankruptcy_fill,
                          partial_rule, partial_step, settle, settle_group)
from .margin import (AccountMargin, MarginMode, Position, PositionMargin, Side, evaluate,
                     maintenance_margin, max_open_size, solve_price, tier_of)
from .rules import Rulebook
from .tiers import TierHistory, TierTable

#: Relative size below which what is left of a position after a close is float dust.
DUST = 1e-9


def _money(leg: "Leg", amount: float) -> str:
    """An amount in a message: 2 decimals in USDT, 8 in a coin (coin-margined, as exchanges show BTC)."""
    return f"{amount:,.8f}" if leg.inst.rulebook.inverse else f"{amount:,.2f}"


# --- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Liquidation:
    """One liquidation, as ``broker.liquidations`` lists it."""

    time: datetime
    symbol: str
    side: str
    size: float
    entry_price: float
    trigger: str
    """``mark`` or ``last``: which price series triggered it."""
    pnl: float
    """Realized PnL of the close at the fill price."""
    trigger_price: float
    fill_price: float
    bankruptcy_price: float
    loss: float
    """What the trader lost on the liquidation (the margin consumed, fees included)."""
    fee: float
    insurance_flow: float
    """What the insurance fund gained (> 0) or covered (< 0)."""
    margin_mode: str
    policy: str
    at_open: bool
    """True when the price opened beyond the liquidation price (a gap)."""
    position_id: int
    leverage: float = math.nan
    liquidation_price: float = math.nan
    """Liquidation price in force when it triggered."""
    tier: int = 0
    """Tier (1-based) of the position at the trigger price."""
    maintenance_rate: float = math.nan
    maintenance_margin: float = math.nan
    """Maintenance margin at the trigger price (the account's, in cross margin)."""
    equity: float = math.nan
    """Margin balance at the trigger price (the position's in isolated, the account's in cross)."""
    mark_price: float = math.nan
    """The bar's adverse mark extreme (low for a long, high for a short)."""
    last_price: float = math.nan
    """The bar's adverse last-price extreme."""
    partial: bool = False
    """True for a partial liquidation step: ``size`` closed at the trigger price, ``remaining``
    left open (:mod:`btperp.liquidation`, partial liquidation)."""
    step: int = 1
    """1-based number of this liquidation event within the trade (steps, then the close)."""
    remaining: float = 0.0
    """Size left open after it (0: the position was closed)."""
    margin_ratio: float = math.nan
    """After a partial step: the remainder's margin ratio at the trigger price (compliant below 1,
    :mod:`btperp.liquidation`)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Seen:
    """What the liquidation check saw when it fired (recorded with the liquidation)."""

    liquidation_price: float
    equity: float
    maintenance_margin: float


@dataclass(frozen=True)
class Fill:
    """One fill of an order (a reversal gives two: the close of one trade, the open of the next)."""

    time: datetime
    symbol: str
    trade_id: int
    side: str
    """Side of the position the fill belongs to: ``long`` or ``short``."""
    size: float
    """Signed size filled (negative: sold)."""
    price: float
    fee: float
    pnl: float
    """Realized PnL of the closing part (0 for an opening fill)."""
    maker: bool
    order_ref: int
    insurance_flow: float = 0.0
    """What the insurance fund covered (< 0) when an isolated position was closed beyond its
    bankruptcy price: the trader's loss stops at the position's margin."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MarginChange:
    """Margin moved into (> 0) or out of (< 0) an isolated position with ``add_margin``."""

    time: datetime
    symbol: str
    trade_id: int
    amount: float
    margin: float
    """The position's isolated margin afterwards."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FundingPayment:
    time: datetime
    symbol: str
    size: float
    """Signed position size that paid (negative: short)."""
    rate: float
    """Sum of the events' rates (NaN when a coarse bar's events are split around its fills)."""
    per_unit: float
    """Σ rate × mark price over the bar's events: what one unit long pays."""
    payment: float
    """What the position paid (negative: received)."""
    position_id: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MarginCall:
    time: datetime
    symbol: str
    trade_id: int
    level: float
    margin_ratio: float
    mark_price: float
    liquidation_price: float | None
    data: Any = field(default=None, repr=False, compare=False)
    """The adapter's handle of the instrument (backtrader: its data feed)."""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "data"}


@dataclass(frozen=True)
class Rejection:
    time: datetime | None
    symbol: str
    size: float
    price: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FillResult:
    """What :meth:`Account.fill` did: the closing and opening parts (signed, as backtrader's
    ``Position.update`` splits them), their margin and fees, and why an opening part was refused."""

    closed: float
    opened: float
    pnl: float
    closed_value: float
    closed_fee: float
    opened_value: float
    opened_fee: float
    refusal: str | None
    """Why the opening part was refused (its margin check at the fill), or None."""
    filled: float
    """What the order sees as filled (the requested size when a float-dust remainder was closed)."""


# --- instruments and legs --------------------------------------------------------------------

@dataclass
class Instrument:
    """The settings of one traded instrument."""

    symbol: str
    rulebook: Rulebook
    tiers: TierHistory
    leverage: float
    margin_mode: MarginMode
    maker_fee: float
    taker_fee: float
    liquidation_fee: float
    fill_policy: FillPolicy
    lot_size: float | None
    trigger: str
    mark_fallback: str | None
    intrabar: Intrabar = Intrabar.PATH
    liquidation: LiquidationMode = LiquidationMode.FULL
    """``partial``: reduce a liquidated position first where the exchange does
    (:mod:`btperp.liquidation`); ``full``: close it whole."""

    @property
    def partial_rule(self):
        """The exchange's partial-liquidation rule in force (None: liquidations close whole)."""
        return partial_rule(self.rulebook, self.liquidation)


class Holding:
    """A position's size and average entry price, updated as backtrader's ``Position.update`` does
    (an increase averages the entry, a reduction keeps it, a reversal takes the fill price)."""

    __slots__ = ("size", "price", "datetime")

    def __init__(self, size: float = 0.0, price: float = 0.0):
        self.size, self.price, self.datetime = size, price, None

    def update(self, size: float, price: float, dt=None) -> None:
        self.datetime = dt
        old = self.size
        self.size += size
        if not self.size:
            self.price = 0.0
        elif not old or (old > 0) != (self.size > 0):       # opened from flat, or reversed
            self.price = price
        elif (old > 0) == (size > 0):                       # increased: the average entry
            self.price = (self.price * old + size * price) / self.size


class Clock:
    """Bar keys (floats the adapter compares every bar) to UTC datetimes and back: POSIX seconds."""

    @staticmethod
    def to_datetime(key: float) -> datetime:
        return datetime.fromtimestamp(key, timezone.utc)

    @staticmethod
    def to_key(when: datetime) -> float:
        return when.timestamp()


class Leg:
    """One instrument's position in an :class:`Account` and what the account knows of the bar.

    The adapter sets the bar's prices (``t_open`` ... ``t_close``: the trigger series, ``mark_open``
    and ``mark_close``) through ``reader`` (called once per bar, when first needed), and may
    override :meth:`trigger_path`, :meth:`time_at`, :meth:`bar_extremes` and :meth:`stamp` to
    give the account finer paths (detail bars) and its own notion of time.
    """

    data: Any = None
    """The adapter's handle of the instrument (backtrader: its data feed)."""

    def __init__(self, inst: Instrument, pos=None, changes: Sequence[float] = ()):
        self.inst = inst
        self.pos = pos if pos is not None else Holding()
        self.isolated = inst.margin_mode is MarginMode.ISOLATED
        self.margin = 0.0               # isolated margin
        self.table: TierTable | None = None
        self.next_change = -math.inf    # bar key of the next tier-table change
        self.changes = list(changes)    # bar keys of the tier history's changes
        self.dirty = True               # liquidation/margin-call prices must be recomputed
        self.rev = 0                    # bumps whenever the position's non-price state changes
        self.version = -1               # cross: account version the cached prices belong to
        self.lp: float | None = None
        self.bp: float | None = None
        self.warn: list[float | None] = []
        self.above: set[float] = set()  # margin-call levels currently crossed
        self.position_id = 0            # trade id: 1, 2, ... per leg, a new one at each open from flat
        self.trade_fees = 0.0           # fees and funding of the current trade so far
        self.trade_funding = 0.0
        self.dt = math.nan              # key of the current bar
        self.fresh = False              # the current bar is new (the account has not moved past it)
        self.valprice = math.nan        # mark the position was last valued at
        # the bar: trigger series (open, high, low, close) and the mark's open and close
        self.t_open = self.t_high = self.t_low = self.t_close = math.nan
        self.mark_close = self.mark_open = math.nan
        self.read = False               # this bar's prices have been read
        self.reader: Callable[["Leg"], None] = lambda leg: None
        self.funding: Callable[["Leg"], tuple[float, float, float] | None] = lambda leg: None
        self.funded = math.nan          # bar whose funding has been looked up
        self.later_funding = None       # (per unit, rate) of events after the open, paid after fills
        # bar time (btperp.intrabar: 0 open .. 1 close) since which the position has its current
        # state, whether a fill changed it in this bar, and the side it had at the bar's open
        self.since = 0.0
        self.changed = False
        self.side0 = 0
        self._path: Path | None = None
        self.low_first = True           # the bar's order of extremes (set with its path)
        self.liq_steps = 0              # liquidation events of the current trade so far
        self.partial_at: datetime | None = None     # time of the trade's last partial step

    # --- the bar -----------------------------------------------------------------------------

    def new_bar(self, key: float) -> None:
        """A new bar (key ``key``) begins: nothing of it is read yet, and no fill has happened."""
        self.dt = key
        self.fresh, self.read = True, False
        self.since, self.changed, self._path = 0.0, False, None
        size = self.pos.size
        self.side0 = 1 if size > 0 else -1 if size < 0 else 0

    def own_path(self) -> Path:
        """The bar's own trigger-series path (:mod:`btperp.intrabar`): its four vertices, the
        extremes in the order ``low_first`` (set here) gives them."""
        if self._path is None:
            if not self.read:
                self.reader(self)
            self.low_first = bool(low_first(self.t_open, self.t_high, self.t_low, self.inst.intrabar,
                                            self.side0))
            self._path = vertices(self.t_open, self.t_high, self.t_low, self.t_close, self.low_first)
        return self._path

    def trigger_path(self) -> Path:
        """The trigger-series path the account checks the bar on (here: :meth:`own_path`)."""
        return self.own_path()

    def time_at(self, t: float, clock: type[Clock] = Clock) -> datetime:
        """When bar time ``t`` happened (a bar's own path: its open)."""
        return clock.to_datetime(self.dt)

    def bar_extremes(self, long: bool) -> tuple[float, float]:
        """The bar's adverse mark and last-price extremes (recorded with a liquidation)."""
        x = self.t_low if long else self.t_high
        return x, x

    def now_key(self) -> float:
        """The key of the current bar (the adapter may know it before the account's first bar)."""
        return self.dt

    def stamp(self):
        """What the position's ``update`` gets as its time (backtrader: the feed's datetime)."""
        return None

    def window(self, t1: float, long: bool) -> tuple[float, float]:
        """The trigger series at ``since`` and its adverse extreme over ``[since, t1]``."""
        since = self.since
        if since == 0.0:
            if t1 >= END:                       # the whole bar: no path needed
                return self.t_open, (self.t_low if long else self.t_high)
            if t1 == 0.0:
                return self.t_open, self.t_open
        path = self.trigger_path()
        return value_at(path, since), window_extreme(path, since, t1, lowest=long)

    def position(self, mark: float | None = None, margin: float | None = None) -> Position:
        """The margin core's view of the position, valued at ``mark`` (default: its entry)."""
        pos = self.pos
        return Position(self.inst.symbol, Side.LONG if pos.size > 0 else Side.SHORT, abs(pos.size),
                        pos.price, pos.price if mark is None else mark, self.inst.leverage, self.table,
                        margin)

    def initial_margin(self, size: float, price: float) -> float:
        """Initial margin of ``size`` (signed) at ``price``, by the exchange's rulebook (Binance:
        notional / leverage; Bybit adds the fee to close it reserves, "Initial Margin (USDT
        Contract)")."""
        inst = self.inst
        side = 1.0 if size > 0 else -1.0
        return float(inst.rulebook.initial_margin(side, abs(size), price, inst.leverage, inst.taker_fee))


class Listener:
    """What an :class:`Account` tells its owner as it happens (the broker turns these into
    backtrader orders and notifications). The default does nothing."""

    def liquidated(self, leg: Leg, size: float, entry: float, record: Liquidation,
                   closed_value: float) -> None:
        """``leg``'s position of ``size`` (signed) at ``entry`` was closed by a liquidation."""

    def margin_call(self, leg: Leg, event: MarginCall) -> None:
        """``leg``'s margin ratio crossed a margin-call level."""

    def funded(self, leg: Leg, payment: FundingPayment) -> None:
        """``leg``'s position paid (or received, negative) funding."""


# --- the account -----------------------------------------------------------------------------

class Account:
    """A perpetual-futures account: wallet, legs, fees, funding, insurance fund and the records
    of each (module docstring). ``levels`` are the margin ratios that raise a margin call."""

    def __init__(self, cash: float, levels: Sequence[float] = (0.8,), *,
                 listener: Listener | None = None, clock: type[Clock] = Clock):
        self.wallet = float(cash)
        self.levels = tuple(levels)
        self.listener = listener or Listener()
        self.clock = clock
        self.legs: list[Leg] = []
        self.version = 0                # bumps on every change of the cross wallet
        self.deposits = 0.0
        self.fills: list[Fill] = []
        self.liquidations: list[Liquidation] = []
        self.funding_payments: list[FundingPayment] = []
        self.margin_calls: list[MarginCall] = []
        self.margin_changes: list[MarginChange] = []
        self.rejections: list[Rejection] = []
        self.journal: list = []
        """Every record above, in the order the account made them (a bar's causal order)."""

    def _log(self, records: list, record) -> None:
        records.append(record)
        self.journal.append(record)

    def add(self, leg: Leg) -> Leg:
        self.legs.append(leg)
        return leg

    def deposit(self, amount: float) -> None:
        """Cash added to the wallet (backtrader's ``add_cash``)."""
        self.wallet += amount
        self.deposits += amount
        self.version += 1

    # --- totals: exact sums (math.fsum) of the records, so any reader of the records gets them

    @property
    def realized_pnl(self) -> float:
        """Realized PnL of every fill and liquidation so far."""
        return math.fsum([f.pnl for f in self.fills] + [x.pnl for x in self.liquidations])

    @property
    def trading_fees(self) -> float:
        return math.fsum(f.fee for f in self.fills)

    @property
    def liquidation_fees(self) -> float:
        return math.fsum(x.fee for x in self.liquidations)

    @property
    def fees_paid(self) -> float:
        """Trading fees plus liquidation fees paid so far."""
        return math.fsum([f.fee for f in self.fills] + [x.fee for x in self.liquidations])

    @property
    def funding_paid(self) -> float:
        """Net funding paid so far (negative when received)."""
        return math.fsum(p.payment for p in self.funding_payments)

    @property
    def insurance_fund(self) -> float:
        """What the exchange's insurance fund gained (+) or covered (−)."""
        return math.fsum([x.insurance_flow for x in self.liquidations]
                         + [f.insurance_flow for f in self.fills if f.insurance_flow])

    def totals(self) -> dict[str, float]:
        return {"deposits": self.deposits, "realized_pnl": self.realized_pnl,
                "trading_fees": self.trading_fees, "liquidation_fees": self.liquidation_fees,
                "funding_paid": self.funding_paid, "wallet_balance": self.wallet,
                "insurance_fund": self.insurance_fund,
                "liquidations": len(self.liquidations),
                "partial_liquidations": sum(1 for x in self.liquidations if x.partial)}

    # --- balances ----------------------------------------------------------------------------

    def cross_wallet(self) -> float:
        return self.wallet - sum(leg.margin for leg in self.legs if leg.isolated)

    def available(self, skip: Leg | None = None, skip_size: float | None = None) -> float:
        """Available balance: cross wallet + cross unrealized PnL − cross initial margin.

        Positions are valued at the mark they were last valued at (no look-ahead within a bar);
        ``skip``'s position is taken as ``skip_size`` (during a fill).
        """
        avail = self.cross_wallet()
        for leg in self.legs:
            if leg.isolated:
                continue
            pos = leg.pos
            size = skip_size if leg is skip else pos.size
            if not size:
                continue
            mark = leg.valprice if leg.valprice == leg.valprice else pos.price
            # Binance "available balance": margin balance − position initial margin (at mark).
            avail += size * (mark - pos.price) - leg.initial_margin(size, mark)
        return avail

    def unrealized(self) -> tuple[float, float, int]:
        """Unrealized PnL and notional at the mark close (a leg with a new bar is valued at its mark
        close; the others at the mark they were last valued at), and how many positions are open."""
        unrealized = notional = 0.0
        held = 0
        for leg in self.legs:
            pos = leg.pos
            if pos.size:
                held += 1
                if leg.fresh:
                    if not leg.read:
                        leg.reader(leg)
                    leg.valprice = leg.mark_close
                unrealized += pos.size * (leg.valprice - pos.price)
                notional += abs(pos.size) * leg.valprice
        return unrealized, notional, held

    # --- orders ------------------------------------------------------------------------------

    def update_table(self, leg: Leg) -> None:
        """The tier table in force at ``leg``'s bar."""
        if leg.table is not None and not leg.dt >= leg.next_change:
            return
        key = leg.now_key()
        leg.table = leg.inst.tiers.at(self.clock.to_datetime(key)).table
        later = [t for t in leg.changes if t > key]
        leg.next_change = later[0] if later else math.inf
        leg.dirty = True
        leg.rev += 1

    def opening_problem(self, leg: Leg, new_size: float, opened: float, price: float,
                        release: float, available: float) -> tuple[str | None, float]:
        """Why opening ``opened`` units at ``price`` (to a position of ``new_size``) is refused
        (None if allowed), and its cost."""
        inst = leg.inst
        self.update_table(leg)
        notional = abs(new_size) * price
        tier = leg.table.lookup(notional)
        if inst.leverage > tier.max_leverage * (1 + 1e-12):
            return (f"notional {_money(leg, notional)} is in tier {tier.tier}, which allows at most "
                    f"{tier.max_leverage:g}x; leverage is {inst.leverage:g}x"), 0.0
        # the rulebook's initial margin (Binance "Leverage and Margin": notional / leverage) and the
        # opening fee at the taker rate
        cost = leg.initial_margin(opened, price) + abs(opened) * price * inst.taker_fee
        if cost > available + release + 1e-9 * max(1.0, cost):
            return (f"initial margin and fee {_money(leg, cost)} exceed the available balance "
                    f"{_money(leg, available + release)}"), cost
        return None, cost

    def release_estimate(self, leg: Leg, size0: float, closing: float, price: float) -> float:
        """What closing ``closing`` units of a position of ``size0`` at ``price`` adds to the
        available balance: the margin it frees and the PnL it realizes, less the closing fee."""
        if not closing:
            return 0.0
        entry = leg.pos.price
        side = 1.0 if size0 > 0 else -1.0
        # Binance "How to Calculate Profit and Loss for Futures": size × (exit − entry) × side
        pnl = side * closing * (price - entry) - closing * price * leg.inst.taker_fee
        if leg.isolated:                        # its margin share comes back with the PnL (≥ 0)
            return max(leg.margin * closing / abs(size0) + pnl, 0.0)
        # cross: the available balance already counts the unrealized PnL and the initial margin
        # at the mark; the close swaps them for the realized PnL at the price
        mark = leg.valprice if leg.valprice == leg.valprice else entry
        return leg.initial_margin(closing * side, mark) + pnl - side * closing * (mark - entry)

    def reject(self, leg: Leg | None, symbol: str, when: datetime | None, size: float, price: float,
               reason: str) -> None:
        """Record an order the exchange refused."""
        self._log(self.rejections, Rejection(when, leg.inst.symbol if leg is not None else symbol,
                                         float(size), float(price), reason))

    def fill(self, leg: Leg, size: float, price: float, maker: bool, t: float, when: datetime,
             order_ref: int = 0) -> FillResult:
        """Fill ``size`` (signed) at ``price`` at bar time ``t``: close what it closes (the realized
        PnL, the closing fee, the margin released), open what it opens if the margin check at the
        fill allows it (else ``refusal`` says why and nothing is opened), update the position."""
        inst = leg.inst
        pos = leg.pos
        psize, pprice = pos.size, pos.price
        reduces = psize * size < 0
        # a full close that float dust (0.1 + 0.2 − 0.3) would leave open: close exactly
        dust = reduces and abs(size + psize) <= DUST * abs(psize)
        if dust:
            closed, opened = -psize, 0.0
        elif reduces:
            closed = -psize if abs(size) >= abs(psize) else size
            opened = size - closed
        else:
            closed, opened = 0.0, size
        fee_rate = inst.maker_fee if maker else inst.taker_fee

        pnl = closedvalue = closedcomm = covered = 0.0
        if closed:
            share = abs(closed) / abs(psize)
            # Binance "How to Calculate Profit and Loss for Futures": size × (exit − entry) × side.
            pnl = -closed * (price - pprice)
            closedcomm = abs(closed) * price * fee_rate
            closedvalue = leg.margin * share if leg.isolated else leg.initial_margin(-closed, pprice)
            if leg.isolated and pnl - closedcomm < -closedvalue:
                # an isolated position loses at most its margin (Binance "Isolated Margin Mode":
                # the loss is limited to the margin placed in the position); the rest is the
                # insurance fund's, as at a liquidation taken over at the bankruptcy price
                covered = pnl - closedcomm + closedvalue
                pnl -= covered
            self.wallet += pnl - closedcomm
            leg.trade_fees += closedcomm
            if leg.isolated:
                leg.margin -= closedvalue
                if abs(closed) == abs(psize):
                    leg.margin = 0.0
        refusal = None
        openedvalue = openedcomm = 0.0
        if opened:
            after_close = psize + closed
            refusal, _ = self.opening_problem(leg, after_close + opened, opened, price, 0.0,
                                              self.available(leg, after_close))
            if refusal:
                opened = 0.0
            else:
                openedcomm = abs(opened) * price * fee_rate
                openedvalue = leg.initial_margin(opened, price)
                self.wallet -= openedcomm
                if leg.isolated:
                    leg.margin += openedvalue
                if after_close == 0:
                    leg.position_id += 1
                    leg.trade_fees = leg.trade_funding = 0.0
                    leg.liq_steps, leg.partial_at = 0, None
                    leg.above.clear()
                leg.trade_fees += openedcomm

        execsize = closed + opened
        if execsize:
            if closed:
                self._log(self.fills, Fill(when, inst.symbol, leg.position_id - (1 if opened else 0),
                                       "long" if psize > 0 else "short", float(closed), float(price),
                                       closedcomm, pnl, maker, order_ref, covered))
            if opened:
                self._log(self.fills, Fill(when, inst.symbol, leg.position_id,
                                       "long" if opened > 0 else "short", float(opened), float(price),
                                       openedcomm, 0.0, maker, order_ref))
            pos.update(execsize, price, leg.stamp())
            if not psize or closed and opened:
                leg.valprice = price            # a new position: valued at its fill until the close
            leg.since = t                       # its new state is checked from this time on
            leg.changed = True
            self._moved(leg)
        return FillResult(closed, opened, pnl, closedvalue, closedcomm, openedvalue, openedcomm,
                          refusal, size if dust else execsize)

    def _moved(self, leg: Leg) -> None:
        """``leg``'s state changed: its cached prices, and any cross position's, are stale."""
        leg.dirty = True
        leg.rev += 1
        self.version += 1

    # --- the bar -------------------------------------------------------------------------------

    def new_bar(self, leg: Leg, key: float) -> None:
        """``leg``'s feed has a new bar (key ``key``): the leg forgets the last one, and the tier
        table in force from this bar on is taken when the history changes it."""
        leg.new_bar(key)
        if key >= leg.next_change:
            self.update_table(leg)

    def open_bar(self) -> None:
        """A bar's events at its open (``t = 0``), after :meth:`new_bar` for each new bar: funding
        events at the open, paid by the positions held then; then gaps (a trigger series opening
        beyond a liquidation price liquidates at the open, before any fill)."""
        held = False
        for leg in self.legs:
            if leg.fresh and leg.pos.size:
                self.fund(leg, at_open=True)
                held = True
        if held:
            self.check(0.0)

    def close_bar(self) -> None:
        """A bar's events after its fills: funding events later in the bar, paid by the positions
        held after the fills; then the rest of the trigger path (liquidations) and margin calls."""
        for leg in self.legs:
            if leg.fresh and leg.pos.size:
                self.fund(leg, at_open=False)
        self.check(END, final=True)

    # --- funding -----------------------------------------------------------------------------

    def fund(self, leg: Leg, at_open: bool) -> None:
        """Pay the bar's funding events at its open (``at_open``) or those later in the bar."""
        if at_open or leg.funded != leg.dt:
            if not leg.read:
                leg.reader(leg)
            leg.funded = leg.dt
            paid = leg.funding(leg)
            leg.later_funding = None
            if paid is None:
                return
            per_unit, first, rate = paid
            later = per_unit - first
            if later:
                leg.later_funding = (later, rate if not first else math.nan)
            if at_open:
                if first:
                    self.pay_funding(leg, first, rate if not later else math.nan)
                return
        if leg.later_funding is not None:
            later, leg.later_funding = leg.later_funding, None
            self.pay_funding(leg, *later)

    def pay_funding(self, leg: Leg, per_unit: float, rate: float) -> float:
        """The position pays ``per_unit`` (Σ rate × mark over the events) per unit long."""
        size = leg.pos.size
        # Binance "Introduction to Binance Futures Funding Rates": position × mark price × rate.
        payment = float(leg.inst.rulebook.funding_payment(size, 1.0, per_unit))
        self.wallet -= payment
        leg.trade_funding += payment
        leg.rev += 1
        if leg.isolated:
            leg.margin -= payment
            leg.dirty = True
        self.version += 1
        record = FundingPayment(self.clock.to_datetime(leg.dt), leg.inst.symbol, size, float(rate),
                                float(per_unit), payment, leg.position_id)
        self._log(self.funding_payments, record)
        self.listener.funded(leg, record)
        return payment

    # --- liquidation prices ------------------------------------------------------------------

    def _refresh(self, leg: Leg, fixed: float) -> None:
        """Liquidation and margin-call prices of a position that alone moves ``fixed`` equity."""
        inst = leg.inst
        p = leg.position()
        rb = inst.rulebook
        leg.lp = solve_price(rb, [p], fixed, inst.taker_fee, p.entry_price)
        leg.bp = solve_price(rb, [p], fixed, inst.taker_fee, p.entry_price, bankruptcy=True)
        leg.warn = [solve_price(rb, [p], fixed, inst.taker_fee, p.entry_price, ratio=level)
                    for level in self.levels]
        leg.dirty = False
        leg.version = self.version
        leg.rev += 1

    def cached_prices(self, leg: Leg) -> tuple[float | None, float | None]:
        """Liquidation and bankruptcy price of a position that alone moves its equity (isolated,
        or the only cross position), recomputed if its state changed since."""
        if leg.isolated:
            if leg.dirty:
                self._refresh(leg, leg.margin)
        elif leg.dirty or leg.version != self.version:
            self._refresh(leg, self.cross_wallet())
        return leg.lp, leg.bp

    def stale(self, leg: Leg, seen_rev: int) -> bool:
        """Whether ``leg``'s cached prices may have changed since a reader saw revision ``seen_rev``."""
        return leg.dirty or leg.rev != seen_rev or (not leg.isolated and leg.version != self.version)

    def shared_prices(self, leg: Leg) -> tuple[float | None, float | None]:
        """Liquidation and bankruptcy price of a cross position that shares the account with
        others (Binance's LP: the other positions at their marks); solved each time."""
        state = self.state_at(leg, leg.valprice)
        return state.liquidation_price, state.bankruptcy_price

    def state_at(self, leg: Leg, price: float) -> PositionMargin:
        """The margin state of ``leg``'s position at ``price`` (cross: the others at their marks)."""
        inst = leg.inst
        if leg.table is None:
            self.update_table(leg)
        p = leg.position(price, leg.margin if leg.isolated else None)
        if leg.isolated:
            return evaluate(inst.rulebook, [p], margin_mode="isolated", taker_fee=inst.taker_fee,
                            _mirrored=inst.rulebook.inverse).positions[0]
        legs = [p if other is leg else other.position(other.valprice if other.valprice == other.valprice
                                                      else None)
                for other in self.legs if not other.isolated and other.pos.size]
        account: AccountMargin = evaluate(inst.rulebook, legs, margin_mode="cross",
                                          wallet_balance=self.cross_wallet(), taker_fee=inst.taker_fee,
                                          _mirrored=inst.rulebook.inverse)
        return next(x for x in account.positions if x.symbol == inst.symbol)

    def margin_state(self, leg: Leg) -> PositionMargin | None:
        """``leg``'s margin state at its last mark (None when flat)."""
        pos = leg.pos
        if not pos.size:
            return None
        return self.state_at(leg, leg.valprice if leg.valprice == leg.valprice else pos.price)

    # --- liquidation -------------------------------------------------------------------------

    def check(self, t1: float, final: bool = False) -> None:
        """Liquidate the positions whose trigger path reaches their liquidation price between the
        time they took their current state (``since``) and bar time ``t1``; at the end of the bar
        (``final``) also record margin calls."""
        cross = []
        for leg in self.legs:
            if not leg.fresh or not leg.pos.size or leg.since > t1:
                continue
            if not leg.read:
                leg.reader(leg)
            if leg.isolated:
                self._check_alone(leg, t1, final, None)
            else:
                cross.append(leg)
        if len(cross) == 1:
            self._check_alone(cross[0], t1, final, cross)
        elif cross:
            self._check_cross(cross, t1, final)

    def _check_alone(self, leg: Leg, t1: float, final: bool, group) -> None:
        """:meth:`_check_single` until the position is closed or its path no longer reaches its
        liquidation price: after a partial step the remainder is checked from the step's time on."""
        while True:
            self.cached_prices(leg)
            if not self._check_single(leg, t1, final, group):
                return

    def _check_single(self, leg: Leg, t1: float, final: bool, group) -> bool:
        """One position moves the equity: compare its path over ``[since, t1]`` with its cached
        prices. Margin calls come first: a bar that crosses a level and the liquidation price did both.
        Returns True when a partial liquidation step left the position open (check it again).
        """
        long = leg.pos.size > 0
        lp = leg.lp
        _, extreme = leg.window(t1, long)
        hit = lp is not None and (extreme <= lp if long else extreme >= lp)
        if (final or hit) and self.levels:
            if lp is not None:              # the ratio it reached: at most where it was liquidated
                extreme = max(extreme, lp) if long else min(extreme, lp)
            close = leg.mark_close
            for level, price in zip(self.levels, leg.warn):
                if price is None:
                    continue
                crossed = extreme <= price if long else extreme >= price
                if crossed and level not in leg.above:
                    leg.above.add(level)
                    self._margin_call(leg, level, extreme)
                elif final and level in leg.above and (close > price if long else close < price):
                    leg.above.discard(level)
        if hit:
            # where on the path it first touched the liquidation price (detail: which minute and
            # whether a minute opened beyond it), the bar's open if it opened beyond
            tau, trigger = first_touch(leg.trigger_path(), lp, long, leg.since)
            if tau > t1:                    # finer bars did not go as far as the bar's own extreme
                return False
            gap = tau == 0.0 and trigger != lp and not leg.changed     # the bar opened beyond it
            when = leg.time_at(tau, self.clock)
            balance = leg.margin if group is None else self.cross_wallet()
            if self._partial(leg, trigger, balance, gap, when, tau):
                return True
            if not leg.pos.size:            # a partial step, then the rest closed
                return False
            if group is None:
                self._liquidate_isolated(leg, trigger, gap, when)
            else:
                self._liquidate_cross(group, {leg: trigger}, gap, {leg: lp}, when)
        return False

    def _group_state(self, legs, prices: Mapping[Leg, float]):
        """Cross account at ``prices``: equity, Σ MM and each leg's unrealized PnL and MM."""
        wallet = self.cross_wallet()
        upnl, mm = {}, {}
        for leg in legs:
            p = leg.position()
            upnl[leg] = float(p.side) * p.size * (prices[leg] - p.entry_price)
            mm[leg] = maintenance_margin(leg.inst.rulebook, p, prices[leg], leg.inst.taker_fee)
        return wallet + sum(upnl.values()), sum(mm.values()), upnl, mm

    def _check_cross(self, legs: list[Leg], t1: float, final: bool) -> None:
        """Several cross positions: the account with every position at its adverse extreme over
        its window ``[since, t1]`` at once (cautious: the extremes need not coincide)."""
        starts, adverse = {}, {}
        for leg in legs:
            starts[leg], adverse[leg] = leg.window(t1, leg.pos.size > 0)
        equity, total_mm, upnl, mm = self._group_state(legs, adverse)
        if equity > total_mm:
            if final and self.levels:
                # margin calls of the account, kept on its first position's leg
                head = legs[0]
                ratio = total_mm / equity
                e_close, mm_close, _, _ = self._group_state(legs, {x: x.mark_close for x in legs})
                ratio_close = mm_close / e_close if e_close > 0 else math.inf
                for level in self.levels:
                    if ratio >= level and level not in head.above:
                        head.above.add(level)
                        self._margin_call(head, level, adverse[head], ratio=ratio)
                    elif level in head.above and ratio_close < level:
                        head.above.discard(level)
            return
        at_open = t1 == 0.0
        triggers, prices = {}, {}
        wallet = self.cross_wallet()
        for leg in legs:
            # Each position's liquidation price with the others held at their adverse extremes,
            # kept between its price at the window's start and its adverse extreme.
            others = sum(upnl[o] - mm[o] for o in legs if o is not leg)
            p = leg.position()
            lp = None if at_open else solve_price(leg.inst.rulebook, [p], wallet + others,
                                                  leg.inst.taker_fee, starts[leg])
            lo, hi = sorted((starts[leg], adverse[leg]))
            triggers[leg] = adverse[leg] if lp is None else min(max(lp, lo), hi)
            prices[leg] = math.nan if lp is None else lp
        self._liquidate_cross(legs, triggers, at_open, prices)

    def _margin_call(self, leg: Leg, level: float, price: float, ratio: float | None = None):
        if ratio is None:
            ratio = self.state_at(leg, price).margin_ratio
        event = MarginCall(self.clock.to_datetime(leg.dt), leg.inst.symbol, leg.position_id, level,
                           float(ratio), float(price), leg.lp, leg.data)
        self._log(self.margin_calls, event)
        self.listener.margin_call(leg, event)

    def _partial(self, leg: Leg, trigger: float, balance: float, at_open: bool,
                 when: datetime | None, tau: float) -> bool:
        """A partial liquidation step of a position that alone moves ``balance`` (isolated margin,
        or the cross wallet of an account holding only it), by its exchange's rule
        (:func:`btperp.liquidation.partial_step`). Returns True when the remainder is margin
        compliant at the trigger price and stays open (checked from ``tau`` on); False when there
        was no step (the caller closes the position whole) or when, after the step, the rest was
        closed at the bankruptcy price."""
        inst = leg.inst
        rule = inst.partial_rule
        if rule is None:
            return False
        when = when or self.clock.to_datetime(leg.dt)
        if (rule.cooldown and leg.partial_at is not None
                and (when - leg.partial_at).total_seconds() < rule.cooldown):
            return False                # Hyperliquid: within the cooldown, the whole position
        p = leg.position()
        step = partial_step(inst.rulebook, p, trigger, balance, rule=rule,
                            fee_rate=inst.liquidation_fee, taker_fee=inst.taker_fee,
                            lot_size=inst.lot_size)
        if step is None:
            return False
        reserve = float(inst.rulebook.bankruptcy_reserve(p.side, p.size, p.entry_price, p.leverage,
                                                          inst.taker_fee))
        seen = _Seen(math.nan if leg.lp is None else leg.lp, step.equity,
                     maintenance_margin(inst.rulebook, p, trigger, inst.taker_fee))
        self._record_step(leg, step, at_open, seen, when,
                          bankruptcy_fill(int(p.side), p.size, p.entry_price, balance, reserve))
        leg.since = tau
        if step.compliant:
            return True
        # Binance: still margin-deficient after the realized loss and fee: the rest is closed at
        # the bankruptcy price (btperp.liquidation, partial liquidation)
        if leg.isolated:
            self._liquidate_isolated(leg, trigger, at_open, when)
        else:
            self._liquidate_cross([leg], {leg: trigger}, at_open, {leg: seen.liquidation_price}, when)
        return False

    def _record_step(self, leg: Leg, step: Step, at_open: bool, seen: _Seen, when: datetime,
                     bankrupt: float) -> None:
        """Apply a partial step: the part closed at the trigger price, its PnL and fee; the
        remainder keeps its entry price and (isolated) the balance the step left."""
        inst = leg.inst
        pos = leg.pos
        size, entry = pos.size, pos.price
        sign = 1.0 if size > 0 else -1.0
        self.wallet += step.realized_pnl - step.fee
        if leg.isolated:
            leg.margin = step.balance_after
        leg.trade_fees += step.fee
        tier = tier_of(inst.rulebook, leg.position(), step.trigger_price)
        mark_x, last_x = leg.bar_extremes(size > 0)
        leg.liq_steps += 1
        record = Liquidation(when, inst.symbol, "long" if size > 0 else "short", step.closed, entry,
                             inst.trigger, step.realized_pnl, step.trigger_price, step.trigger_price,
                             float(bankrupt), step.loss, step.fee, step.insurance_flow,
                             str(inst.margin_mode), str(inst.fill_policy), at_open, leg.position_id,
                             inst.leverage, seen.liquidation_price, tier.tier,
                             tier.maintenance_margin_rate, seen.maintenance_margin, seen.equity,
                             float(mark_x), float(last_x), True, leg.liq_steps, step.remaining,
                             step.margin_ratio)
        self._log(self.liquidations, record)
        closed_value = leg.initial_margin(sign * step.closed, entry)
        pos.update(-sign * step.closed, step.trigger_price, leg.stamp())
        leg.partial_at = when
        leg.above.clear()
        self._moved(leg)
        self.listener.liquidated(leg, sign * step.closed, entry, record, closed_value)

    def _liquidate_isolated(self, leg: Leg, trigger: float, at_open: bool, when=None) -> None:
        inst = leg.inst
        p = leg.position()
        reserve = float(inst.rulebook.bankruptcy_reserve(p.side, p.size, p.entry_price, p.leverage,
                                                          inst.taker_fee))
        # Binance "Liquidation Protocols": closed at the bankruptcy price, the liquidation fee and
        # what is left of the margin going to the insurance fund (btperp.liquidation.settle)
        result = settle(int(p.side), p.size, p.entry_price, trigger, leg.margin,
                        policy=inst.fill_policy, fee_rate=inst.liquidation_fee, reserve=reserve)
        seen = _Seen(math.nan if leg.lp is None else leg.lp, result.equity_at_trigger,
                     maintenance_margin(inst.rulebook, p, trigger, inst.taker_fee))
        self._close_liquidated(leg, result, at_open, seen, when)

    def _liquidate_cross(self, legs, triggers: Mapping[Leg, float], at_open: bool,
                         prices: Mapping[Leg, float], when=None) -> None:
        group = []
        for leg in legs:
            p = leg.position()
            price = triggers[leg]
            group.append(GroupLeg(int(p.side), p.size, p.entry_price, price,
                                  maintenance_margin(leg.inst.rulebook, p, price, leg.inst.taker_fee),
                                  float(leg.inst.rulebook.bankruptcy_reserve(
                                      p.side, p.size, p.entry_price, p.leverage, leg.inst.taker_fee))))
        head = legs[0].inst
        wallet = self.cross_wallet()
        results = settle_group(group, wallet, policy=head.fill_policy, fee_rate=head.liquidation_fee)
        # the account's margin balance and maintenance margin at the trigger prices
        equity = wallet + sum(g.side * g.size * (g.trigger_price - g.entry_price) for g in group)
        total_mm = sum(g.maintenance_margin for g in group)
        for leg, result in zip(legs, results):
            self._close_liquidated(leg, result, at_open,
                                   _Seen(prices.get(leg, math.nan), equity, total_mm), when)

    def _close_liquidated(self, leg: Leg, result: Settlement, at_open: bool, seen: _Seen,
                          when: datetime | None = None) -> None:
        inst = leg.inst
        pos = leg.pos
        size, entry = pos.size, pos.price
        self.wallet += result.realized_pnl - result.fee
        leg.margin = 0.0
        leg.trade_fees += result.fee
        tier = tier_of(inst.rulebook, leg.position(), result.trigger_price)
        mark_x, last_x = leg.bar_extremes(size > 0)
        record = Liquidation(when or self.clock.to_datetime(leg.dt), inst.symbol,
                             "long" if size > 0 else "short", abs(size), entry, inst.trigger,
                             result.realized_pnl, result.trigger_price, result.fill_price,
                             result.bankruptcy_price, result.loss, result.fee, result.insurance_flow,
                             str(inst.margin_mode), str(inst.fill_policy), at_open, leg.position_id,
                             inst.leverage, seen.liquidation_price, tier.tier,
                             tier.maintenance_margin_rate, seen.maintenance_margin, seen.equity,
                             float(mark_x), float(last_x), step=leg.liq_steps + 1)
        leg.liq_steps += 1
        self._log(self.liquidations, record)
        closed_value = leg.initial_margin(size, entry)
        pos.update(-size, result.fill_price, leg.stamp())
        leg.above.clear()
        self._moved(leg)
        self.listener.liquidated(leg, size, entry, record, closed_value)

    # --- margin the trader moves and what can still be opened ---------------------------------

    def max_open_size(self, leg: Leg, price: float, isbuy: bool, available: float) -> float:
        """Units ``available`` can open on ``leg`` at ``price`` in the direction of ``isbuy``:
        initial margin and opening fee within it, and the position within the notional its tier
        allows at this leverage, as the order check sees it; down to the lot size."""
        self.update_table(leg)
        inst = leg.inst
        held = leg.pos.size
        same_side = held if (held > 0) == isbuy else 0.0
        # 1 % under the tier cap: a market order sized at the close fills at the next open, and a
        # fill above the cap is refused (as on the exchange)
        cap = leg.table.max_notional_for(inst.leverage) * 0.99 - abs(same_side) * price
        # what the rulebook adds to notional / leverage per unit (Bybit's reserved fee to close)
        extra = leg.initial_margin(1.0 if isbuy else -1.0, price) - price / inst.leverage
        size = max_open_size(available, price, inst.leverage, inst.taker_fee, max(cap, 0.0),
                             extra_per_unit=extra)
        lot = inst.lot_size
        return math.floor(size / lot + 1e-9) * lot if lot else size

    def add_margin(self, leg: Leg, amount: float, available: float) -> float:
        """Move ``amount`` from the available balance into ``leg``'s isolated margin (negative: take
        it back out, down to the initial margin). Returns the new margin."""
        if not leg.isolated:
            raise InputError(f"{leg.inst.symbol} is in cross margin: its margin is the cross wallet",
                             field="margin_mode")
        pos = leg.pos
        if not pos.size:
            raise InputError(f"{leg.inst.symbol} has no open position", field="data")
        if not math.isfinite(amount):
            raise InputError(f"amount must be a finite number, got {amount!r}", field="amount")
        if amount > available + 1e-9:
            raise InputError(f"amount {_money(leg, amount)} exceeds the available balance "
                             f"{_money(leg, available)}", field="amount")
        floor = leg.initial_margin(pos.size, pos.price)
        if amount < 0 and leg.margin + amount < floor - 1e-9:
            raise InputError(f"removing {_money(leg, -amount)} would leave "
                             f"{_money(leg, leg.margin + amount)}, below the initial margin "
                             f"{_money(leg, floor)}", field="amount")
        leg.margin += amount
        self._moved(leg)
        self._log(self.margin_changes, MarginChange(self.clock.to_datetime(leg.dt), leg.inst.symbol,
                                                leg.position_id, float(amount), leg.margin))
        return leg.margin


__all__ = ["Account", "Leg", "Instrument", "Holding", "Clock", "Listener", "FillResult",
           "Liquidation", "Fill", "MarginChange", "FundingPayment", "MarginCall", "Rejection", "DUST"]
