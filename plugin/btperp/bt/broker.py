"""PerpBroker: a backtrader broker that margins, funds and liquidates like a perpetual-futures exchange.

``btperp.install(cerebro, exchange="binance-usdm", cash=10_000, leverage=5)`` replaces cerebro's
broker; strategies do not change. The margin math is the pure core's (:mod:`btperp.margin`,
:mod:`btperp.liquidation`, the exchange's :mod:`rulebook <btperp.rules>`); this module keeps the
account and drives backtrader's order machinery.

The account (settlement currency, USDT)
    * **wallet** = cash deposited + realized PnL − fees − funding (Binance "wallet balance"),
      isolated margins included;
    * each isolated position holds an **isolated margin** (initial margin at the fills, plus
      :meth:`~PerpBroker.add_margin`, minus the funding it paid);
    * the **cross wallet** is the wallet minus the isolated margins; cross positions share it;
    * ``broker.getvalue()`` = wallet + unrealized PnL at the mark close (Binance "margin
      balance"), ``broker.getcash()`` = the available balance: cross wallet + cross unrealized
      PnL − cross positions' initial margin (Binance "available balance").

Each bar, in this order (``next``):
    1. orders the strategy sent last bar are checked: an opening order is rejected
       (``Order.Margin``, reason in ``order.info.margin_reason``) when its initial margin plus fee
       exceeds the available balance or its notional is above what the tier allows at the
       leverage;
    2. funding events inside the bar are paid or received by the positions held at the bar's
       open, on the mark price at the event (from the isolated margin, or the wallet in cross);
    3. a position whose trigger price (mark by default) *opens* beyond its liquidation price is
       liquidated at the open, before any order can fill;
    4. pending orders execute by backtrader's rules (market at the open, limits and stops against
       the bar's last-price range); fees are taker, maker for a limit filled at its limit price;
    5. positions are checked against the bar's adverse mark extreme (``mark_low`` for longs,
       ``mark_high`` for shorts), per position in isolated margin, on the account in cross;
       a liquidated position's pending orders are cancelled and it is closed by an order marked
       ``order.info.liquidation`` that the strategy sees in ``notify_order``/``notify_trade``
       in this same bar, settled by :func:`btperp.liquidation.settle`;
    6. margin calls: a margin ratio crossing a level (default 0.8) is recorded and the owning
       strategy's ``notify_margin_call(event)`` is called if it has one;
    7. value and available balance at the mark close.

Funding paid is also added to the position's ``d_credit`` so that, like backtrader's interest,
it is charged to the trade when it closes (``trade.pnlcomm`` is net of fees and funding).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import backtrader as bt
import numpy as np
from backtrader.order import BuyOrder, Order, SellOrder

from ..errors import DataError, DataWarning, InputError
from ..intrabar import (END, Intrabar, OrderKind, detail_path, first_touch, low_first, order_time,
                        value_at, vertices, window_extreme)
from ..liquidation import FillPolicy, GroupLeg, Settlement, settle, settle_group
from ..margin import (AccountMargin, MarginMode, Position, PositionMargin, Side, evaluate,
                      maintenance_margin, max_open_size, solve_price, tier_of)
from ..rules import Rulebook, get_rulebook
from ..symbols import to_unified
from ..tiers import TierHistory, TierTable
from .feed import BT_EPOCH, PerpData
from .sizers import make_fractional

#: Order types whose fill at their own limit price rests on the book (maker fee).
_LIMIT_TYPES = (Order.Limit, Order.StopLimit, Order.StopTrailLimit)
#: Relative size below which what is left of a position after a close is float dust.
_DUST = 1e-9


def _utc(num: float) -> datetime:
    return bt.num2date(num).replace(tzinfo=timezone.utc)


def _to_num(when: datetime) -> float:
    return (when.timestamp()) / 86_400 + BT_EPOCH


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Trigger:
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

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "data"}


@dataclass(frozen=True)
class Rejection:
    time: datetime
    symbol: str
    size: float
    price: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


# --- commission info -------------------------------------------------------------------------

class PerpCommInfo(bt.CommInfoBase):
    """Linear perpetual: percentage fees on notional, margin = price / leverage, fractional sizes.

    backtrader's own ``leverage`` parameter stays 1 (with another value its futures value is
    wrong); btperp's leverage is ``leverage_setting`` and reaches backtrader through
    :meth:`get_margin`. Fees are charged by :class:`PerpBroker` (maker or taker).
    """

    params = (
        ("stocklike", False),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("commission", 0.0005),
        ("leverage_setting", 1.0),
        ("lot_size", None),
    )

    def get_margin(self, price):
        """Initial margin of one unit at ``price``."""
        # Binance "Leverage and Margin of USDⓈ-M Futures": initial margin = notional / leverage.
        return price / self.p.leverage_setting

    def getsize(self, price, cash):
        """Units whose notional is ``cash`` at ``price``, down to the lot size (not to integers)."""
        size = cash / price
        lot = self.p.lot_size
        if lot:
            size = math.floor(size / lot + 1e-9) * lot
        return size

    def getvaluesize(self, size, price):
        return abs(size) * self.get_margin(price)

    def get_credit_interest(self, data, pos, dt):
        return 0.0                      # funding is booked by the broker


# --- per-instrument state --------------------------------------------------------------------

@dataclass
class Instrument:
    """The settings of one traded instrument (a data feed)."""

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


class _Book:
    """What the broker keeps per data feed (plain attributes: read every bar)."""

    def __init__(self, data, inst: Instrument, comminfo: PerpCommInfo):
        self.data = data
        self.inst = inst
        self.comminfo = comminfo
        self.isolated = inst.margin_mode is MarginMode.ISOLATED
        self.margin = 0.0               # isolated margin
        self.table: TierTable | None = None
        self.next_change = -math.inf    # bt date number of the next tier-table change
        self.changes = [_to_num(t) for t in inst.tiers.change_times()]
        self.dirty = True               # liquidation/margin-call prices must be recomputed
        self.rev = 0                    # bumps whenever the position's non-price state changes
        self.version = -1               # cross: ledger version the cached prices belong to
        self.lp: float | None = None
        self.warn: list[float | None] = []
        self.above: set[float] = set()  # margin-call levels currently crossed
        self.position_id = 0            # trade id: 1, 2, ... per feed, a new one at each open from flat
        self.trade_fees = 0.0           # fees and funding of the current trade so far
        self.trade_funding = 0.0
        self.bp: float | None = None
        self.owner = None
        self.dt = math.nan              # bt date number of the last bar seen
        self.fresh = False
        self.valprice = math.nan        # mark close the position was last valued at
        self.fallback_bars = 0
        # bar prices: trigger series (open, high, low) and valuation mark (close)
        self.t_open = self.t_high = self.t_low = self.t_close = math.nan
        self.mark_close = self.mark_open = math.nan
        self.read = False               # this bar's prices have been read
        # bar time (btperp.intrabar: 0 open .. 1 close) since which the position has its current
        # state, the side it had at the bar's open, and the bar's paths (trigger, last), if built
        self.since = 0.0
        self.changed = False            # a fill changed the position in this bar
        self.side0 = 0
        self.paths: tuple | None = None
        self.coarse: tuple | None = None    # the bar's own paths (``paths`` may go through detail)
        self.detail = getattr(data, "btperp_detail", None)      # finer bars (btperp.attach_detail)
        self.span = None                # (first row, start of each detail bar in bar time) this bar
        self.row = -1
        self.later_funding = None       # (per unit, rate) of events after the open, paid after fills
        self.funded = math.nan          # bar whose funding has been looked up
        self.reader: Callable[["_Book"], None] = _read_last
        self.funding: Callable[["_Book"], tuple[float, float] | None] = _no_funding
        self.pos = None                 # the broker's Position of this data (set by the broker)
        lines = data.lines
        self.l_dt, self.l_o, self.l_h, self.l_l = lines.datetime, lines.open, lines.high, lines.low
        self.l_c = lines.close
        if isinstance(data, PerpData):
            self.l_mo, self.l_mh, self.l_ml, self.l_mc = (lines.mark_open, lines.mark_high,
                                                          lines.mark_low, lines.mark_close)
            self.l_fpu, self.l_frate = lines.funding_per_unit, lines.funding_rate
            self.l_fopen = lines.funding_open_per_unit


def _initial_margin(book: _Book, size: float, price: float) -> float:
    """Initial margin of ``size`` (signed) at ``price``, by the exchange's rulebook (Binance: notional /
    leverage; Bybit adds the fee to close it reserves, "Initial Margin (USDT Contract)")."""
    inst = book.inst
    side = 1.0 if size > 0 else -1.0
    return float(inst.rulebook.initial_margin(side, abs(size), price, inst.leverage, inst.taker_fee))


def _fallback(book: _Book, what: str) -> None:
    """A bar without a mark price: an error, or its last prices with ``mark_fallback='last'``."""
    if book.inst.mark_fallback != "last":
        raise DataError(f"{book.inst.symbol}: no mark price for the bar at "
                        f"{_utc(book.dt):%Y-%m-%d %H:%M} UTC ({what}); add mark prices "
                        f"(btperp.attach) or pass mark_fallback='last'", timestamp=_utc(book.dt))
    book.fallback_bars += 1
    data = book.data
    book.mark_open, book.mark_close = data.open[0], data.close[0]
    book.t_open, book.t_high, book.t_low = data.open[0], data.high[0], data.low[0]
    book.t_close = data.close[0]


def _now(buf) -> float:
    """A line's value at the current bar (``buf[0]`` without the property lookups: read per bar)."""
    return buf.array[buf._idx]


def _take(book: _Book, mo, mh, ml, mc, last: Callable[[], tuple], what: str) -> None:
    """Keep the bar's mark prices and its trigger series (the mark, or ``last()``'s last prices);
    a NaN mark falls back (:func:`_fallback`, ``what`` says where it was)."""
    if mo != mo or mh != mh or ml != ml or mc != mc:            # NaN
        return _fallback(book, what)
    book.mark_open, book.mark_close = mo, mc
    if book.inst.trigger == "mark":
        book.t_open, book.t_high, book.t_low, book.t_close = mo, mh, ml, mc
    else:
        book.t_open, book.t_high, book.t_low, book.t_close = last()


def _read_perp(book: _Book) -> None:
    """PerpData: the bar's mark prices (and last prices when they trigger)."""
    book.read = True
    _take(book, _now(book.l_mo), _now(book.l_mh), _now(book.l_ml), _now(book.l_mc),
          lambda: (_now(book.l_o), _now(book.l_h), _now(book.l_l), _now(book.l_c)),
          "the feed's mark lines are NaN")


def _split(per_unit, at_open, rate, book: _Book):
    """(total per unit, part at the bar's open, rate) of the bar's funding, or None."""
    if per_unit != per_unit:
        if rate != rate:
            return None
        per_unit = rate * book.mark_open    # events whose mark is missing (mark_fallback='last')
        at_open = per_unit if at_open == at_open else math.nan
    return per_unit, at_open if at_open == at_open else 0.0, rate


def _funding_perp(book: _Book):
    return _split(_now(book.l_fpu), _now(book.l_fopen), _now(book.l_frate), book)


def _read_perp_tick(book: _Book) -> None:
    """A replayed PerpData: the source bar (``data.tick_*``, filled by the replayer), not the bar
    being built, whose mark low is the lowest since the period opened (:mod:`btperp.bt.resample`)."""
    book.read = True
    d = book.data
    _take(book, d.tick_mark_open, d.tick_mark_high, d.tick_mark_low, d.tick_mark_close,
          lambda: (d.tick_open, d.tick_high, d.tick_low, d.tick_close), "the feed's mark lines are NaN")


def _funding_perp_tick(book: _Book):
    d = book.data
    return _split(d.tick_funding_per_unit, d.tick_funding_open_per_unit, d.tick_funding_rate, book)


def _read_table(book: _Book) -> None:
    """A feed with :func:`btperp.attach`: the bar's row in the attached table."""
    book.read = True
    table = book.data.btperp_market
    i = book.row = table.row(book.dt)
    cols = table.columns
    if i < 0:
        return _fallback(book, "no row in the attached table")
    _take(book, cols["mark_open"][i], cols["mark_high"][i], cols["mark_low"][i], cols["mark_close"][i],
          lambda: (_now(book.l_o), _now(book.l_h), _now(book.l_l), _now(book.l_c)), "its mark is NaN")


def _funding_table(book: _Book):
    i = book.row
    if i < 0:
        return None
    cols = book.data.btperp_market.columns
    return _split(cols["funding_per_unit"][i], cols["funding_open_per_unit"][i], cols["funding_rate"][i],
                  book)


def _read_last(book: _Book) -> None:
    """A feed with no mark prices at all (allowed only with ``mark_fallback='last'``)."""
    book.read = True
    _fallback(book, "the feed has no mark prices")


def _no_funding(book: _Book):
    return None


# --- the broker ------------------------------------------------------------------------------

class PerpBroker(bt.brokers.BackBroker):
    """backtrader broker for linear perpetual futures (see the module docstring).

    Params (each but ``cash`` can be overridden per data with :meth:`configure`):

    - ``exchange``: ``binance-usdm`` (default), ``bybit`` or ``hyperliquid``
    - ``leverage`` (1), ``margin_mode`` (``isolated`` | ``cross``)
    - ``maker_fee`` / ``taker_fee`` / ``liquidation_fee``: None = the exchange's standard rates
    - ``fill_policy``: ``bankruptcy`` (default) or ``fee`` (:mod:`btperp.liquidation`)
    - ``lot_size``: order sizes are rounded down to it (None: no rounding)
    - ``trigger``: ``mark`` (default) or ``last`` (liquidate on last-price extremes, as
      freqtrade and Jesse do; for comparisons)
    - ``mark_fallback``: None (a bar without a mark is an error) or ``last``
    - ``intrabar``: ``path`` (default) or ``adverse``: which extreme of a bar comes first when
      fills, funding and liquidations are put in time order (:mod:`btperp.intrabar`)
    - ``detail``: None, or a finer timeframe (``"1m"``) whose stored mark/last bars each feed is
      replayed on inside its bars (:func:`btperp.bt.feed.attach_detail`; feeds may carry their own)
    - ``margin_call_levels``: margin ratios that raise a margin call (default ``(0.8,)``)
    - ``tiers``: tier tables: None (the exchange's bundled history), a TierTable, a TierHistory,
      or a dict symbol → either
    - ``datadir``: datasets root for the bundled tier histories (default: btperp's)
    """

    params = (
        ("exchange", "binance-usdm"),
        ("leverage", 1.0),
        ("margin_mode", "isolated"),
        ("maker_fee", None),
        ("taker_fee", None),
        ("liquidation_fee", None),
        ("fill_policy", "bankruptcy"),
        ("lot_size", None),
        ("trigger", "mark"),
        ("mark_fallback", None),
        ("intrabar", "path"),
        ("detail", None),
        ("margin_call_levels", (0.8,)),
        ("tiers", None),
        ("datadir", None),
    )

    _INSTRUMENT_KEYS = ("exchange", "leverage", "margin_mode", "maker_fee", "taker_fee",
                        "liquidation_fee", "fill_policy", "lot_size", "trigger", "mark_fallback",
                        "intrabar", "tiers")

    def __init__(self):
        super().__init__()
        self._overrides: dict[Any, dict] = {}
        self._check_params("broker", {k: getattr(self.p, k) for k in self._INSTRUMENT_KEYS})
        levels = self.p.margin_call_levels
        levels = tuple(sorted(float(x) for x in ((levels,) if isinstance(levels, (int, float)) else levels or ())))
        if any(not 0 < x < 1 for x in levels):
            raise InputError(f"margin call levels must be between 0 and 1, got {levels}",
                             field="margin_call_levels")
        self._levels = levels

    # --- configuration ---------------------------------------------------------------------

    def configure(self, data_or_name, **settings) -> "PerpBroker":
        """Per-data settings (leverage, margin_mode, fees, ...) for a feed or its name/symbol."""
        unknown = set(settings) - set(self._INSTRUMENT_KEYS)
        if unknown:
            raise InputError(f"unknown setting(s) {sorted(unknown)}; choose from "
                             f"{', '.join(self._INSTRUMENT_KEYS)}", field=sorted(unknown)[0])
        self._check_params(str(getattr(data_or_name, "_name", data_or_name)), settings)
        self._overrides.setdefault(data_or_name, {}).update(settings)
        return self

    def setcommission(self, commission=0.0, margin=None, mult=1.0, commtype=None, percabs=True,
                      stocklike=False, interest=0.0, interest_long=False, leverage=1.0,
                      automargin=False, name=None) -> None:
        """backtrader's ``setcommission``: ``commission`` (a fraction of notional; with
        ``percabs=False`` a percentage) becomes the maker and the taker fee of the feed ``name``,
        or of every feed. What contradicts a linear perpetual is an :class:`InputError` naming
        btperp's setting (never silently ignored)."""
        where = f"setcommission(name={name!r})" if name is not None else "setcommission"
        wrong = []
        if margin is not None or automargin:
            wrong.append(("margin", "the initial margin is notional / leverage: set leverage "
                                    "(btperp.install(leverage=...) or broker.configure(name, leverage=...))"))
        if leverage not in (None, 1, 1.0):
            wrong.append(("leverage", "set btperp's leverage (btperp.install(leverage=...) or "
                                      "broker.configure(name, leverage=...)); backtrader's leverage "
                                      "would change the position's value"))
        if mult not in (None, 1, 1.0):
            wrong.append(("mult", "linear perpetuals have a multiplier of 1: sizes are in base units "
                                  "(lot_size= rounds them)"))
        if stocklike:
            wrong.append(("stocklike", "a perpetual is futures-like (margin, not cash, is paid)"))
        if commtype not in (None, bt.CommInfoBase.COMM_PERC):
            wrong.append(("commtype", "fees are a percentage of notional: pass commission as a "
                                      "fraction, or maker_fee/taker_fee to configure"))
        if interest or interest_long:
            wrong.append(("interest", "perpetuals pay funding, from the feed's funding rates, "
                                      "instead of interest"))
        if wrong:
            raise InputError(f"{where}: " + "; ".join(f"{k}: {why}" for k, why in wrong),
                             field=wrong[0][0])
        rate = commission if percabs else commission / 100.0
        if name is None:
            self._check_params(where, {"maker_fee": rate})
            self.p.maker_fee = self.p.taker_fee = rate
            for settings in self._overrides.values():       # a later global setting wins
                settings.pop("maker_fee", None)
                settings.pop("taker_fee", None)
        else:
            self.configure(name, maker_fee=rate, taker_fee=rate)
        for book in getattr(self, "_books", None) or ():   # during a run: from the next fill on
            if name is None or name in (book.data._name, book.inst.symbol):
                book.inst.maker_fee = book.inst.taker_fee = float(rate)
                book.comminfo.p.commission = float(rate)

    @staticmethod
    def _check_params(where: str, s: Mapping[str, Any]) -> None:
        if "exchange" in s:
            get_rulebook(s["exchange"])
        if "margin_mode" in s:
            MarginMode.parse(s["margin_mode"])
        if "fill_policy" in s:
            FillPolicy.parse(s["fill_policy"])
        if "intrabar" in s:
            Intrabar.parse(s["intrabar"])
        lev = s.get("leverage")
        if lev is not None and not (isinstance(lev, (int, float)) and math.isfinite(lev) and lev >= 1):
            raise InputError(f"{where}: leverage must be a number >= 1, got {lev!r}", field="leverage")
        for key in ("maker_fee", "taker_fee", "liquidation_fee", "lot_size"):
            v = s.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{where}: {key} must be a number >= 0, got {v!r}", field=key)
        if s.get("trigger", "mark") not in ("mark", "last"):
            raise InputError(f"{where}: trigger must be 'mark' or 'last', got {s['trigger']!r}",
                             field="trigger")
        if s.get("mark_fallback") not in (None, "last"):
            raise InputError(f"{where}: mark_fallback must be None or 'last', got "
                             f"{s['mark_fallback']!r}", field="mark_fallback")

    # --- life cycle ------------------------------------------------------------------------

    def init(self):
        super().init()
        self._wallet = self.cash
        self._books: list[_Book] | None = None
        self._by_data: dict[Any, _Book] = {}
        self._version = 0                       # bumps on every change of the cross wallet
        self._cash_version = -1
        self.liquidations: list[Liquidation] = []
        self.funding_payments: list[FundingPayment] = []
        self.margin_calls: list[MarginCall] = []
        self.rejections: list[Rejection] = []
        self.open_positions = 0
        """Positions open after the last bar."""
        self.fills: list[Fill] = []
        self.margin_changes: list[MarginChange] = []
        self.deposits = 0.0
        self._inflight = None                   # the order being filled (btperp.intrabar)
        self._fill_when = None                  # the detail bar a fill happens in

    def set_cash(self, cash):
        super().set_cash(cash)
        self._wallet = cash

    setcash = set_cash

    # Totals are exact sums (math.fsum) of the records, so any reader of the records gets them.

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
        """What the exchange's insurance fund gained (+) or covered (−) over the run."""
        return math.fsum([x.insurance_flow for x in self.liquidations]
                         + [f.insurance_flow for f in self.fills if f.insurance_flow])

    @property
    def wallet_balance(self) -> float:
        return self._wallet

    def stop(self):
        super().stop()
        for book in self._books or []:
            if book.fallback_bars:
                warnings.warn(f"{book.inst.symbol}: {book.fallback_bars} bars had no mark price; their "
                              f"last prices were used (mark_fallback='last')", DataWarning,
                              stacklevel=2)
            detail = book.detail
            if detail is not None and detail.missing:
                first = _utc(min(detail.missing))
                warnings.warn(f"{book.inst.symbol}: {len(detail.missing)} bars in which a liquidation, "
                              f"margin call or fill could happen had no {detail.timeframe} detail (the "
                              f"first at {first:%Y-%m-%d %H:%M} UTC); their own prices were used",
                              DataWarning, stacklevel=2)

    def _setup(self):
        cerebro = getattr(self, "cerebro", None)
        datas = list(cerebro.datas) if cerebro is not None else list(self.positions)
        tier_files: dict[str, Any] = {}
        self._books = []
        for data in datas:
            if self.p.detail is not None and getattr(data, "btperp_detail", None) is None:
                from .feed import attach_detail
                attach_detail(data, self.p.detail, datadir=self.p.datadir)
            settings = {k: getattr(self.p, k) for k in self._INSTRUMENT_KEYS}
            symbol = self._symbol_of(data)
            for key in (data._name, symbol, data):
                if key in self._overrides:
                    settings.update(self._overrides[key])
            rulebook = get_rulebook(settings["exchange"])
            tiers = settings["tiers"]
            if isinstance(tiers, Mapping):
                tiers = tiers.get(symbol) or tiers.get(data._name)
            if isinstance(tiers, TierTable):
                tiers = TierHistory.constant(tiers)
            if tiers is None:                       # the exchange's bundled history
                from ..io.tierfile import TierHistoryFile
                if rulebook.name not in tier_files:
                    tier_files[rulebook.name] = TierHistoryFile.bundled(rulebook.name, self.p.datadir)
                found = tier_files[rulebook.name]
                tiers = found.history(symbol, rulebook.settle) if found is not None else None
            if tiers is None:
                raise InputError(f"no tier table for {symbol} on {rulebook.name}: pass tiers= (a "
                                 f"TierTable or TierHistory; Hyperliquid: Hyperliquid.table_for_max_"
                                 f"leverage(n)) or import its history with `btperp data import-tiers`",
                                 field="tiers")
            inst = Instrument(
                symbol=symbol, rulebook=rulebook, tiers=tiers, leverage=float(settings["leverage"]),
                margin_mode=MarginMode.parse(settings["margin_mode"]),
                maker_fee=rulebook.maker_fee if settings["maker_fee"] is None else float(settings["maker_fee"]),
                taker_fee=rulebook.taker_fee if settings["taker_fee"] is None else float(settings["taker_fee"]),
                liquidation_fee=(rulebook.liquidation_fee_rate if settings["liquidation_fee"] is None
                                 else float(settings["liquidation_fee"])),
                fill_policy=FillPolicy.parse(settings["fill_policy"]),
                lot_size=settings["lot_size"], trigger=settings["trigger"],
                mark_fallback=settings["mark_fallback"], intrabar=Intrabar.parse(settings["intrabar"]))
            comminfo = PerpCommInfo(commission=inst.taker_fee, leverage_setting=inst.leverage,
                                    lot_size=inst.lot_size)
            book = _Book(data, inst, comminfo)
            book.pos = self.positions[data]
            if isinstance(data, PerpData):
                book.reader, book.funding = ((_read_perp_tick, _funding_perp_tick) if data.replaying
                                             else (_read_perp, _funding_perp))
                self._scan_marks(book)
            elif getattr(data, "btperp_market", None) is not None:
                book.reader, book.funding = _read_table, _funding_table
            elif inst.mark_fallback != "last":
                raise DataError(f"{symbol}: the feed has no mark prices; use a PerpData feed "
                                f"(btperp.load_feed), attach them (btperp.attach) or pass "
                                f"mark_fallback='last'")
            if book.funding is _no_funding:
                warnings.warn(f"{symbol}: the feed has no funding data; no funding is paid",
                              DataWarning, stacklevel=3)
            self._books.append(book)
            self._by_data[data] = book
        for strategy in getattr(cerebro, "runningstrats", None) or []:
            make_fractional(strategy)

    @staticmethod
    def _scan_marks(book: _Book) -> None:
        """Fail (or count, with the fallback) before the run when a PerpData bar has no mark."""
        import numpy as np
        cols = book.data._cols
        bad = np.zeros(len(cols["datetime"]), bool)
        for name in ("mark_open", "mark_high", "mark_low", "mark_close"):
            bad |= np.isnan(cols[name])
        if bad.any() and book.inst.mark_fallback != "last":
            first = _utc(cols["datetime"][np.argmax(bad)])
            raise DataError(f"{book.inst.symbol}: no mark price for {int(bad.sum())} bars, the first at "
                            f"{first:%Y-%m-%d %H:%M} UTC; add mark prices or pass mark_fallback='last'",
                            timestamp=first, count=int(bad.sum()))

    @staticmethod
    def _symbol_of(data) -> str:
        symbol = getattr(data.p, "symbol", None) if isinstance(data, PerpData) else None
        market = getattr(data, "btperp_market", None)
        symbol = symbol or (market.symbol if market is not None else None) or data._name
        if not symbol:
            raise InputError("a data feed has neither a symbol nor a name: pass name='BTCUSDT' to "
                             "the feed (or use btperp.load_feed)", field="symbol")
        return to_unified(symbol)

    def getcommissioninfo(self, data):
        """The feed's PerpCommInfo (backtrader's own lookup is by name, and feeds may share one)."""
        book = self._by_data.get(data) if self._books is not None else None
        if book is not None:
            return book.comminfo
        return super().getcommissioninfo(data)

    # --- orders ----------------------------------------------------------------------------

    def _round_lot(self, data, size):
        lot = self._book(data).inst.lot_size
        if not lot or size is None:
            return size, None
        rounded = math.floor(abs(size) / lot + 1e-9) * lot
        if rounded <= 0:
            return size, f"size {abs(size):g} is below the lot size {lot:g}"
        return rounded, None

    def buy(self, owner, data, size, *args, **kwargs):
        size, problem = self._round_lot(data, size)
        if problem:
            return self._refuse(BuyOrder, owner, data, size, kwargs, problem)
        return super().buy(owner, data, size, *args, **kwargs)

    def sell(self, owner, data, size, *args, **kwargs):
        size, problem = self._round_lot(data, size)
        if problem:
            return self._refuse(SellOrder, owner, data, size, kwargs, problem)
        return super().sell(owner, data, size, *args, **kwargs)

    def _refuse(self, cls, owner, data, size, kwargs, reason):
        """An order the exchange would refuse outright (below the lot size): Rejected."""
        order = cls(owner=owner, data=data, size=size, price=kwargs.get("price"),
                    pricelimit=kwargs.get("plimit"), exectype=kwargs.get("exectype"),
                    tradeid=kwargs.get("tradeid", 0))
        order.reject(self)
        order.addinfo(reject_reason=reason)
        self._record_rejection(order, reason)
        self.notify(order)
        return order

    def _record_rejection(self, order, reason):
        data = order.data
        book = self._by_data.get(data)
        symbol = book.inst.symbol if book else (data._name or "?")
        when = _utc(data.datetime[0]) if len(data) else None
        self.rejections.append(Rejection(when, symbol, float(order.size), float(order.created.price or 0.0),
                                         reason))

    def _opening_problem(self, book: _Book, new_size: float, opened: float, price: float,
                         release: float, available: float) -> tuple[str | None, float]:
        """Why opening ``opened`` units at ``price`` is refused (None if allowed), and its cost."""
        inst = book.inst
        self._update_table(book)
        notional = abs(new_size) * price
        tier = book.table.lookup(notional)
        if inst.leverage > tier.max_leverage * (1 + 1e-12):
            return (f"notional {notional:,.2f} is in tier {tier.tier}, which allows at most "
                    f"{tier.max_leverage:g}x; leverage is {inst.leverage:g}x"), 0.0
        # the rulebook's initial margin (Binance "Leverage and Margin": notional / leverage) and the
        # opening fee at the taker rate
        cost = _initial_margin(book, opened, price) + abs(opened) * price * inst.taker_fee
        if cost > available + release + 1e-9 * max(1.0, cost):
            return (f"initial margin and fee {cost:,.2f} exceed the available balance "
                    f"{available + release:,.2f}"), cost
        return None, cost

    def _margin_refusal(self, order, reason):
        order.addinfo(margin_reason=reason)
        self._record_rejection(order, reason)
        order.margin()
        self.notify(order)
        self._ococheck(order)
        self._bracketize(order, cancel=True)

    def check_submitted(self):
        """Accept or refuse (``Order.Margin``) the orders sent since the last bar."""
        available = self.cash
        projected: dict[Any, float] = {}
        while self.submitted:
            order = self.submitted.popleft()
            if self._take_children(order) is None:
                continue
            data = order.data
            book = self._by_data.get(data)
            if book is None:
                self.submit_accept(order)
                continue
            size0 = projected.get(data, self.positions[data].size)
            size = order.executed.remsize
            closing = min(abs(size), abs(size0)) if size * size0 < 0 else 0.0
            opened = abs(size) - closing
            cost = release = 0.0
            if opened > _DUST * abs(size):
                price = order.created.price or data.close[0]
                release = self._release_estimate(book, size0, closing, price)
                reason, cost = self._opening_problem(book, size0 + size, opened, price, release,
                                                     available)
                if reason:
                    self._margin_refusal(order, reason)
                    continue
            available += release - cost
            projected[data] = size0 + size
            self.submit_accept(order)

    def _release_estimate(self, book, size0, closing, price):
        """What closing ``closing`` units of a position of ``size0`` at ``price`` adds to the
        available balance: the margin it frees and the PnL it realizes, less the closing fee."""
        if not closing:
            return 0.0
        entry = self.positions[book.data].price
        side = 1.0 if size0 > 0 else -1.0
        # Binance "How to Calculate Profit and Loss for Futures": size × (exit − entry) × side
        pnl = side * closing * (price - entry) - closing * price * book.inst.taker_fee
        if book.isolated:                       # its margin share comes back with the PnL (≥ 0)
            return max(book.margin * closing / abs(size0) + pnl, 0.0)
        # cross: the available balance already counts the unrealized PnL and the initial margin
        # at the mark; the close swaps them for the realized PnL at the price
        mark = book.valprice if book.valprice == book.valprice else entry
        return _initial_margin(book, closing * side, mark) + pnl - side * closing * (mark - entry)

    @staticmethod
    def _is_maker(order, price) -> bool:
        """A limit order filled at its own limit price rested on the book: maker."""
        if order.exectype in _LIMIT_TYPES:
            limit = order.created.pricelimit if order.exectype != Order.Limit else order.created.price
            return limit is not None and price == limit
        return False

    def _execute(self, order, ago=None, price=None, cash=None, position=None, dtcoc=None):
        """Fill ``order`` (or the part of it the filler allows) at ``price`` and book it."""
        if ago is None or price is None:
            return          # pseudo-executions are BackBroker.check_submitted's; ours does not use them
        data = order.data
        book = self._by_data[data]
        inst = book.inst
        # btperp.intrabar: what the path reaches before this fill happens first; a liquidation of
        # this order's position then cancels it
        t = self._order_time(order, book)
        if t > 0.0 and any(b.pos.size for b in self._books):
            self._inflight = order
            self._check_liquidations(t)
            self._inflight = None
            if not order.alive():
                return
        if self.p.filler is None:
            size = order.executed.remsize
        else:
            size = self.p.filler(order, price, ago)
            if not order.isbuy():
                size = -size
        pos = self.positions[data]
        psize, pprice = pos.size, pos.price
        reduces = psize * size < 0
        # a full close that float dust (0.1 + 0.2 − 0.3) would leave open: close exactly
        dust = reduces and abs(size + psize) <= _DUST * abs(psize)
        if dust:
            closed, opened = -psize, 0.0
        elif reduces:
            closed = -psize if abs(size) >= abs(psize) else size
            opened = size - closed
        else:
            closed, opened = 0.0, size
        maker = self._is_maker(order, price)
        fee_rate = inst.maker_fee if maker else inst.taker_fee

        pnl = closedvalue = closedcomm = covered = 0.0
        if closed:
            share = abs(closed) / abs(psize)
            # Binance "How to Calculate Profit and Loss for Futures": size × (exit − entry) × side.
            pnl = -closed * (price - pprice)
            closedcomm = abs(closed) * price * fee_rate
            closedvalue = book.margin * share if book.isolated else _initial_margin(book, -closed, pprice)
            if book.isolated and pnl - closedcomm < -closedvalue:
                # an isolated position loses at most its margin (Binance "Isolated Margin Mode":
                # the loss is limited to the margin placed in the position); the rest is the
                # insurance fund's, as at a liquidation taken over at the bankruptcy price
                covered = pnl - closedcomm + closedvalue
                pnl -= covered
            self._wallet += pnl - closedcomm
            book.trade_fees += closedcomm
            if book.isolated:
                book.margin -= closedvalue
                if abs(closed) == abs(psize):
                    book.margin = 0.0
        popened = opened
        openedvalue = openedcomm = 0.0
        if opened:
            after_close = psize + closed
            reason, _ = self._opening_problem(book, after_close + opened, opened, price, 0.0,
                                              self._available(book, after_close))
            if reason:
                opened = 0.0
            else:
                openedcomm = abs(opened) * price * fee_rate
                openedvalue = _initial_margin(book, opened, price)
                self._wallet -= openedcomm
                if book.isolated:
                    book.margin += openedvalue
                if after_close == 0:
                    book.position_id += 1
                    book.trade_fees = book.trade_funding = 0.0
                    book.above.clear()
                book.trade_fees += openedcomm

        execsize = closed + opened
        if execsize:
            filled = size if dust else execsize         # what the order sees as filled
            if order.owner is not None:
                book.owner = order.owner
            when = self._fill_when or _utc(book.dt)
            if closed:
                self.fills.append(Fill(when, inst.symbol, book.position_id - (1 if opened else 0),
                                       "long" if psize > 0 else "short", float(closed), float(price),
                                       closedcomm, pnl, maker, order.ref, covered))
            if opened:
                self.fills.append(Fill(when, inst.symbol, book.position_id, "long" if opened > 0 else "short",
                                       float(opened), float(price), openedcomm, 0.0, maker, order.ref))
            pos.update(execsize, price, data.datetime.datetime())
            if closed and self.p.int2pnl:
                closedcomm += self.d_credit.pop(data, 0.0)      # funding since the last close
            if not psize or closed and opened:
                book.valprice = price           # a new position: valued at its fill until the close
            book.since = t                      # its new state is checked from this time on
            book.changed = True
            book.dirty = True
            book.rev += 1
            self._version += 1
            order.execute(dtcoc or data.datetime[ago], filled, price,
                          closed, closedvalue, closedcomm, opened, openedvalue, openedcomm,
                          book.comminfo.get_margin(price), pnl, pos.size, pos.price)
            order.addcomminfo(book.comminfo)
            self.notify(order)
            self._ococheck(order)
            self.cash = self._available()
        if popened and not opened:
            self._margin_refusal(order, reason)

    # --- account ---------------------------------------------------------------------------

    def _cross_wallet(self) -> float:
        return self._wallet - sum(b.margin for b in self._books if b.isolated)

    def _available(self, skip: _Book | None = None, skip_size: float | None = None) -> float:
        """Available balance: cross wallet + cross unrealized PnL − cross initial margin.

        Positions are valued at the mark they were last valued at (no look-ahead within a bar);
        ``skip``'s position is taken as ``skip_size`` (during a fill).
        """
        avail = self._cross_wallet()
        for b in self._books:
            if b.isolated:
                continue
            pos = self.positions[b.data]
            size = skip_size if b is skip else pos.size
            if not size:
                continue
            mark = b.valprice if b.valprice == b.valprice else pos.price
            # Binance "available balance": margin balance − position initial margin (at mark).
            avail += size * (mark - pos.price) - _initial_margin(b, size, mark)
        return avail

    def _get_value(self, datas=None, lever=False):
        """Value = wallet + unrealized PnL at the mark close; cash = the available balance."""
        while self._cash_addition:
            c = self._cash_addition.popleft()
            self._fundshares += c / self._fundval
            self._wallet += c
            self.deposits += c
            self._version += 1
        if datas is not None and len(datas) == 1:
            data = datas[0]
            return self.positions[data].size * data.close[0]
        unrealized = notional = 0.0
        held = 0
        for book in self._books or ():
            pos = book.pos
            if pos.size:
                held += 1
                if book.fresh:
                    if not book.read:
                        book.reader(book)
                    book.valprice = book.mark_close
                unrealized += pos.size * (book.valprice - pos.price)
                notional += abs(pos.size) * book.valprice
        self._unrealized = unrealized
        self.open_positions = held
        self._value = self._wallet + unrealized
        if not self._books:
            self.cash = self._wallet
        elif notional or self._version != self._cash_version:     # flat and unchanged: same cash
            self.cash = self._available()
        self._cash_version = self._version
        self._valuemkt = unrealized
        self._valuelever = self._valuemktlever = notional
        self._leverage = notional / self._value if self._value > 0 else math.inf if notional else 0.0
        if self._fundshares:
            self._fundval = self._value / self._fundshares
        return self._value

    def get_value(self, datas=None, mkt=False, lever=False):
        """Account value (margin balance), or with ``datas=[d]`` the position's signed notional."""
        if datas is not None:
            return self._get_value(datas=datas)
        if mkt:
            return self._valuemkt
        return self._valuelever if lever else self._value

    getvalue = get_value

    # --- the bar ---------------------------------------------------------------------------

    def next(self):
        while self._toactivate:
            self._toactivate.popleft().activate()
        if self._books is None:
            self._setup()
        held = False
        for book in self._books:
            buf = book.l_dt
            if buf.lencount and buf.array[buf._idx] != book.dt:
                book.dt = buf.array[buf._idx]
                book.fresh, book.read = True, False
                book.since, book.paths, book.coarse, book.changed = 0.0, None, None, False
                size = book.pos.size
                book.side0 = 1 if size > 0 else -1 if size < 0 else 0
                if book.dt >= book.next_change:
                    self._update_table(book)
                held = held or bool(size)
            else:
                book.fresh = False

        if self.submitted and self.p.checksubmit:
            self.check_submitted()

        if held:
            for book in self._books:                # 2. funding at the open: positions held then
                if book.fresh and book.pos.size:
                    self._fund(book, at_open=True)
            self._check_liquidations(0.0)           # 3. gaps at the open

        self._process_order_history()               # 4. orders, by backtrader's rules
        if self.pending:
            self.pending.append(None)
            while True:
                order = self.pending.popleft()
                if order is None:
                    break
                if order.expire():
                    self.notify(order)
                    self._ococheck(order)
                    self._bracketize(order, cancel=True)
                elif not order.active():
                    self.pending.append(order)
                else:
                    self._try_exec(order)
                    if order.alive():
                        self.pending.append(order)
                    elif order.status == Order.Completed:
                        self._bracketize(order)

        for book in self._books:                    # 4b. funding later in the bar: positions after fills
            if book.fresh and book.pos.size:
                self._fund(book, at_open=False)
        self._check_liquidations(END, final=True)   # 5. the rest of the path, 6. margin calls
        self._get_value()                           # 7.

    # --- the bar's path (btperp.intrabar) ----------------------------------------------------

    def _coarse(self, book: _Book) -> tuple:
        """The bar's own trigger and last-price paths, four vertices each (built once per bar)."""
        if book.coarse is None:
            if not book.read:
                book.reader(book)
            first_low = bool(low_first(book.t_open, book.t_high, book.t_low, book.inst.intrabar,
                                       book.side0))
            data = book.data
            last = [getattr(data, name, None) for name in self._TICKS]
            o, h, lo, c = (x if x is not None else line[0] for x, line in
                           zip(last, (data.open, data.high, data.low, data.close)))
            book.coarse = (vertices(book.t_open, book.t_high, book.t_low, book.t_close, first_low),
                           vertices(o, h, lo, c, first_low))
        return book.coarse

    def _paths(self, book: _Book) -> tuple:
        """The bar's trigger path and last-price path (built once per bar, when needed): through its
        detail bars where they cover it, else the bar's own (:meth:`_coarse`)."""
        if book.paths is not None:
            return book.paths
        paths = list(self._coarse(book))
        book.span = None
        detail = book.detail
        rows = detail.bars(book.dt) if detail is not None else None
        if detail is not None and rows is None:
            detail.missing.add(book.dt)
        elif rows is not None:
            i0, i1 = rows
            trig = detail.mark if book.inst.trigger == "mark" else detail.last
            # each detail bar's path; its order of extremes decided on its trigger (or last) series
            lead = next(x for x in (trig, detail.last, detail.mark) if x is not None)
            o_, h_, l_, _ = (x[i0:i1] for x in lead)
            firsts = low_first(o_, h_, l_, book.inst.intrabar, book.side0)
            for k, series in ((0, trig), (1, detail.last)):
                if series is not None and not any(np.isnan(x[i0:i1]).any() for x in series):
                    paths[k] = detail_path(*(x[i0:i1] for x in series), firsts)
                    if k == 0:                  # times on the trigger path name a detail bar
                        book.span = (i0, i1)
        book.paths = tuple(paths)
        return book.paths

    def _detail_time(self, book: _Book, t: float) -> datetime:
        """When bar time ``t`` happened: the open of the detail bar holding it, else the bar's open."""
        if book.span is None:
            return _utc(book.dt)
        i0, i1 = book.span
        j = min(int(t * (i1 - i0) + 1e-9), i1 - i0 - 1)
        return _utc(book.detail.times[i0 + j])

    def _order_time(self, order, book: _Book, coarse: bool = False) -> float:
        """Bar time at which ``order`` fills on the last-price path (btperp.intrabar); ``coarse``:
        on the bar's own four-vertex path (inf: the bar's range never reaches its price)."""
        ex = order.exectype
        if ex == Order.Close:
            return END
        if ex not in (Order.Limit, Order.Stop, Order.StopTrail, Order.StopLimit, Order.StopTrailLimit):
            return 0.0                              # market (and historical): at the open
        path = (self._coarse(book) if coarse else self._paths(book))[1]
        buy = order.isbuy()
        price = order.created.price
        if ex == Order.Limit:
            t = order_time(OrderKind.LIMIT, buy, path, price)
        elif ex in (Order.Stop, Order.StopTrail):
            t = order_time(OrderKind.STOP, buy, path, price)
        else:                                       # stop-limit, triggered now or in an earlier bar
            t = order_time(OrderKind.STOP_LIMIT, buy, path, price, order.created.pricelimit)
            if t == math.inf:
                t = order_time(OrderKind.LIMIT, buy, path, order.created.pricelimit)
        if coarse:
            return t
        return t if t < math.inf else END       # backtrader fills it: no later than the close

    _TICKS = ("tick_open", "tick_high", "tick_low", "tick_close")

    def _try_exec(self, order):
        """backtrader's fill rules, on the detail bars of the bar when last-price detail covers it:
        the first detail bar that fills the order fills it, at the price backtrader gives on that
        bar (as a run on the detail bars would)."""
        book = self._by_data.get(order.data) if self._books is not None else None
        detail = book.detail if book is not None else None
        if (detail is None or detail.last is None or order.exectype in (Order.Market, Order.Close)
                or self._order_time(order, book, coarse=True) == math.inf):
            return super()._try_exec(order)
        rows = detail.bars(book.dt)
        if rows is None:
            detail.missing.add(book.dt)
            return super()._try_exec(order)
        data = order.data
        i0, i1 = rows
        if order.exectype in (Order.Limit, Order.Stop, Order.StopLimit):
            # the detail path says when its price is first reached: start one detail bar before
            # (trailing stops move with each detail bar's close, so they walk them all)
            t = self._order_time(order, book)
            if t < END:
                i0 += max(int(t * (i1 - i0)) - 1, 0)
        saved = [getattr(data, name, None) for name in self._TICKS]
        try:
            for j in range(i0, i1):
                for name, series in zip(self._TICKS, detail.last):
                    setattr(data, name, series[j])
                self._fill_when = _utc(detail.times[j])
                super()._try_exec(order)
                if not order.alive() or order.executed.size:
                    break
        finally:
            self._fill_when = None
            for name, value in zip(self._TICKS, saved):
                setattr(data, name, value)

    def _window(self, book: _Book, t1: float, long: bool) -> tuple[float, float]:
        """The trigger series at ``book.since`` and its adverse extreme over ``[since, t1]``."""
        since = book.since
        if since == 0.0:
            if t1 >= END:                       # the whole bar: no path needed
                return book.t_open, (book.t_low if long else book.t_high)
            if t1 == 0.0:
                return book.t_open, book.t_open
        path = self._paths(book)[0]
        return value_at(path, since), window_extreme(path, since, t1, lowest=long)

    def _update_table(self, book: _Book) -> None:
        if book.table is not None and not book.dt >= book.next_change:
            return
        now = _utc(book.dt) if book.dt == book.dt else _utc(book.data.datetime[0])
        book.table = book.inst.tiers.at(now).table
        later = [t for t in book.changes if t > book.dt]
        book.next_change = later[0] if later else math.inf
        book.dirty = True
        book.rev += 1

    def _fund(self, book: _Book, at_open: bool) -> None:
        """Pay the bar's funding events at its open (``at_open``) or those later in the bar."""
        if at_open or book.funded != book.dt:
            if not book.read:
                book.reader(book)
            book.funded = book.dt
            paid = book.funding(book)
            book.later_funding = None
            if paid is None:
                return
            per_unit, first, rate = paid
            later = per_unit - first
            if later:
                book.later_funding = (later, rate if not first else math.nan)
            if at_open:
                if first:
                    self._pay_funding(book, first, rate if not later else math.nan)
                return
        if book.later_funding is not None:
            self._pay_funding(book, *book.later_funding)
            book.later_funding = None

    def _pay_funding(self, book: _Book, per_unit: float, rate: float) -> None:
        pos = self.positions[book.data]
        # Binance "Introduction to Binance Futures Funding Rates": position × mark price × rate.
        payment = float(book.inst.rulebook.funding_payment(pos.size, 1.0, per_unit))
        per_unit, rate = float(per_unit), float(rate)
        self._wallet -= payment
        book.trade_funding += payment
        book.rev += 1
        if book.isolated:
            book.margin -= payment
            book.dirty = True
        self._version += 1
        self.d_credit[book.data] += payment
        self.funding_payments.append(FundingPayment(_utc(book.dt), book.inst.symbol, pos.size, rate,
                                                    per_unit, payment, book.position_id))

    # --- liquidation -----------------------------------------------------------------------

    def _leg(self, book: _Book, mark: float | None = None, margin: float | None = None) -> Position:
        """The core's view of ``book``'s position, valued at ``mark`` (default: its entry)."""
        pos = book.pos
        return Position(book.inst.symbol, Side.LONG if pos.size > 0 else Side.SHORT, abs(pos.size),
                        pos.price, pos.price if mark is None else mark, book.inst.leverage, book.table,
                        margin)

    def _refresh(self, book: _Book, fixed: float) -> None:
        """Liquidation and margin-call prices of a position that alone moves ``fixed`` equity."""
        inst = book.inst
        leg = self._leg(book)
        rb = inst.rulebook
        book.lp = solve_price(rb, [leg], fixed, inst.taker_fee, leg.entry_price)
        book.bp = solve_price(rb, [leg], fixed, inst.taker_fee, leg.entry_price, bankruptcy=True)
        book.warn = [solve_price(rb, [leg], fixed, inst.taker_fee, leg.entry_price, ratio=level)
                     for level in self._levels]
        book.dirty = False
        book.version = self._version
        book.rev += 1

    def _cached_prices(self, book: _Book) -> tuple[float | None, float | None]:
        """Liquidation and bankruptcy price of a position that alone moves its equity (isolated, or
        the only cross position), recomputed if its state changed since."""
        if book.isolated:
            if book.dirty:
                self._refresh(book, book.margin)
        elif book.dirty or book.version != self._version:
            self._refresh(book, self._cross_wallet())
        return book.lp, book.bp

    def _state_prices(self, book: _Book) -> tuple[float | None, float | None]:
        """Liquidation and bankruptcy price of a cross position that shares the account with
        others (Binance's LP: the other positions at their marks); solved each time."""
        state = self._state_at(book, book.valprice)
        return state.liquidation_price, state.bankruptcy_price

    def _check_liquidations(self, t1: float, final: bool = False) -> None:
        """Liquidate the positions whose trigger path reaches their liquidation price between the
        time they took their current state (``since``) and bar time ``t1``; at the end of the bar
        (``final``) also record margin calls."""
        cross = []
        for book in self._books:
            if not book.fresh or not book.pos.size or book.since > t1:
                continue
            if not book.read:
                book.reader(book)
            if book.isolated:
                self._cached_prices(book)
                self._check_single(book, t1, final, group=None)
            else:
                cross.append(book)
        if len(cross) == 1:
            self._cached_prices(cross[0])
            self._check_single(cross[0], t1, final, group=cross)
        elif cross:
            self._check_cross(cross, t1, final)

    def _check_single(self, book: _Book, t1: float, final: bool, group) -> None:
        """One position moves the equity: compare its path over ``[since, t1]`` with its cached
        prices. Margin calls come first: a bar that crosses a level and the liquidation price did both.
        """
        long = book.pos.size > 0
        lp = book.lp
        _, extreme = self._window(book, t1, long)
        hit = lp is not None and (extreme <= lp if long else extreme >= lp)
        if (final or hit) and self._levels:
            if lp is not None:              # the ratio it reached: at most where it was liquidated
                extreme = max(extreme, lp) if long else min(extreme, lp)
            close = book.mark_close
            for level, price in zip(self._levels, book.warn):
                if price is None:
                    continue
                crossed = extreme <= price if long else extreme >= price
                if crossed and level not in book.above:
                    book.above.add(level)
                    self._margin_call(book, level, extreme)
                elif final and level in book.above and (close > price if long else close < price):
                    book.above.discard(level)
        if hit:
            # where on the path it first touched the liquidation price (detail: which minute and
            # whether a minute opened beyond it), the bar's open if it opened beyond
            tau, trigger = first_touch(self._paths(book)[0], lp, long, book.since)
            if tau > t1:                    # finer bars did not go as far as the bar's own extreme
                return
            gap = tau == 0.0 and trigger != lp and not book.changed     # the bar opened beyond it
            when = self._detail_time(book, tau)
            if group is None:
                self._liquidate_isolated(book, trigger, gap, when)
            else:
                self._liquidate_cross(group, {book: trigger}, gap, {book: lp}, when)

    def _group_state(self, books, prices: Mapping[_Book, float]):
        """Cross account at ``prices``: equity, Σ MM and each leg's unrealized PnL and MM."""
        wallet = self._cross_wallet()
        upnl, mm = {}, {}
        for b in books:
            leg = self._leg(b)
            upnl[b] = float(leg.side) * leg.size * (prices[b] - leg.entry_price)
            mm[b] = maintenance_margin(b.inst.rulebook, leg, prices[b], b.inst.taker_fee)
        return wallet + sum(upnl.values()), sum(mm.values()), upnl, mm

    def _check_cross(self, books: list[_Book], t1: float, final: bool) -> None:
        """Several cross positions: the account with every position at its adverse extreme over
        its window ``[since, t1]`` at once (cautious: the extremes need not coincide)."""
        starts, adverse = {}, {}
        for b in books:
            starts[b], adverse[b] = self._window(b, t1, b.pos.size > 0)
        equity, total_mm, upnl, mm = self._group_state(books, adverse)
        if equity > total_mm:
            if final and self._levels:
                # margin calls of the account, kept on its first position's book
                head = books[0]
                ratio = total_mm / equity
                e_close, mm_close, _, _ = self._group_state(books, {b: b.mark_close for b in books})
                ratio_close = mm_close / e_close if e_close > 0 else math.inf
                for level in self._levels:
                    if ratio >= level and level not in head.above:
                        head.above.add(level)
                        self._margin_call(head, level, adverse[head], ratio=ratio)
                    elif level in head.above and ratio_close < level:
                        head.above.discard(level)
            return
        at_open = t1 == 0.0
        triggers, prices = {}, {}
        wallet = self._cross_wallet()
        for b in books:
            # Each position's liquidation price with the others held at their adverse extremes,
            # kept between its price at the window's start and its adverse extreme.
            others = sum(upnl[o] - mm[o] for o in books if o is not b)
            leg = self._leg(b)
            lp = None if at_open else solve_price(b.inst.rulebook, [leg], wallet + others,
                                                  b.inst.taker_fee, starts[b])
            lo, hi = sorted((starts[b], adverse[b]))
            triggers[b] = adverse[b] if lp is None else min(max(lp, lo), hi)
            prices[b] = math.nan if lp is None else lp
        self._liquidate_cross(books, triggers, at_open, prices)

    def _margin_call(self, book: _Book, level: float, price: float, ratio: float | None = None):
        if ratio is None:
            state = self._state_at(book, price)
            ratio = state.margin_ratio
        event = MarginCall(_utc(book.dt), book.inst.symbol, book.position_id, level, float(ratio),
                           float(price), book.lp, book.data)
        self.margin_calls.append(event)
        owner = book.owner or self._default_owner()
        handler = getattr(owner, "notify_margin_call", None)
        if handler is not None:
            handler(event)

    def _default_owner(self):
        strats = getattr(getattr(self, "cerebro", None), "runningstrats", None)
        return strats[0] if strats else None

    def _liquidate_isolated(self, book: _Book, trigger: float, at_open: bool, when=None) -> None:
        inst = book.inst
        leg = self._leg(book)
        reserve = float(inst.rulebook.bankruptcy_reserve(leg.side, leg.size, leg.entry_price,
                                                          leg.leverage, inst.taker_fee))
        result = settle(int(leg.side), leg.size, leg.entry_price, trigger, book.margin,
                        policy=inst.fill_policy, fee_rate=inst.liquidation_fee, reserve=reserve)
        seen = _Trigger(math.nan if book.lp is None else book.lp, result.equity_at_trigger,
                        maintenance_margin(inst.rulebook, leg, trigger, inst.taker_fee))
        self._close_liquidated(book, result, at_open, seen, when)

    def _liquidate_cross(self, books, triggers: Mapping[_Book, float], at_open: bool,
                         prices: Mapping[_Book, float], when=None) -> None:
        legs = []
        for b in books:
            leg = self._leg(b)
            price = triggers[b]
            legs.append(GroupLeg(int(leg.side), leg.size, leg.entry_price, price,
                                 maintenance_margin(b.inst.rulebook, leg, price, b.inst.taker_fee),
                                 float(b.inst.rulebook.bankruptcy_reserve(
                                     leg.side, leg.size, leg.entry_price, leg.leverage,
                                     b.inst.taker_fee))))
        head = books[0].inst
        wallet = self._cross_wallet()
        results = settle_group(legs, wallet, policy=head.fill_policy, fee_rate=head.liquidation_fee)
        # the account's margin balance and maintenance margin at the trigger prices
        equity = wallet + sum(l.side * l.size * (l.trigger_price - l.entry_price) for l in legs)
        total_mm = sum(l.maintenance_margin for l in legs)
        for b, result in zip(books, results):
            self._close_liquidated(b, result, at_open,
                                   _Trigger(prices.get(b, math.nan), equity, total_mm), when)

    def _bar_extremes(self, book: _Book, long: bool) -> tuple[float, float]:
        """The bar's adverse mark and last-price extremes (recorded with a liquidation)."""
        data = book.data
        last = data.low[0] if long else data.high[0]
        if book.inst.trigger == "mark":
            return (book.t_low if long else book.t_high), last
        if isinstance(data, PerpData):
            return _now(book.l_ml if long else book.l_mh), last
        table = getattr(data, "btperp_market", None)
        if table is not None and book.row >= 0:
            return table.columns["mark_low" if long else "mark_high"][book.row], last
        return last, last

    def _close_liquidated(self, book: _Book, result: Settlement, at_open: bool,
                          seen: _Trigger, when: datetime | None = None) -> None:
        data = book.data
        pos = self.positions[data]
        for order in [o for o in self.pending if o is not None and o.data is data]:
            self.cancel(order)
        inflight = self._inflight
        if inflight is not None and inflight.data is data and inflight.alive():
            inflight.cancel()                   # the order being filled: not in pending just now
            self.notify(inflight)
            self._ococheck(inflight)
            self._bracketize(inflight, cancel=True)
        inst = book.inst
        size = pos.size
        owner = book.owner or self._default_owner()
        cls = SellOrder if size > 0 else BuyOrder
        order = cls(owner=owner, data=data, size=abs(size), price=result.fill_price,
                    exectype=Order.Market)
        order.addinfo(liquidation=True, trigger=inst.trigger, trigger_price=result.trigger_price,
                      bankruptcy_price=result.bankruptcy_price, insurance_flow=result.insurance_flow,
                      fill_policy=str(inst.fill_policy))
        order.submit(self)
        order.accept(self)
        order.addcomminfo(book.comminfo)
        self.orders.append(order)

        self._wallet += result.realized_pnl - result.fee
        book.margin = 0.0
        book.trade_fees += result.fee
        leg = self._leg(book)
        tier = tier_of(inst.rulebook, leg, result.trigger_price)
        mark_x, last_x = self._bar_extremes(book, size > 0)
        record = Liquidation(when or _utc(book.dt), inst.symbol, "long" if size > 0 else "short", abs(size),
                             pos.price, inst.trigger, result.realized_pnl, result.trigger_price,
                             result.fill_price,
                             result.bankruptcy_price, result.loss, result.fee, result.insurance_flow,
                             str(inst.margin_mode), str(inst.fill_policy), at_open, book.position_id,
                             inst.leverage, seen.liquidation_price, tier.tier,
                             tier.maintenance_margin_rate, seen.maintenance_margin, seen.equity,
                             float(mark_x), float(last_x))
        self.liquidations.append(record)

        closedvalue = _initial_margin(book, size, pos.price)
        comm = result.fee + (self.d_credit.pop(data, 0.0) if self.p.int2pnl else 0.0)
        pprice = pos.price
        pos.update(-size, result.fill_price, data.datetime.datetime())
        order.execute(data.datetime[0], -size, result.fill_price, -size, closedvalue, comm,
                      0.0, 0.0, 0.0, book.comminfo.get_margin(result.fill_price), result.realized_pnl,
                      0.0, 0.0)
        order.addinfo(entry_price=pprice)
        book.dirty = True
        book.rev += 1
        book.above.clear()
        self._version += 1
        self.notify(order)

    # --- helpers for strategies --------------------------------------------------------------

    def _state_at(self, book: _Book, price: float) -> PositionMargin:
        inst = book.inst
        if book.table is None:
            self._update_table(book)
        leg = self._leg(book, price, book.margin if book.isolated else None)
        if book.isolated:
            return evaluate(inst.rulebook, [leg], margin_mode="isolated",
                            taker_fee=inst.taker_fee).positions[0]
        legs = [leg if b is book else self._leg(b, b.valprice if b.valprice == b.valprice else None)
                for b in self._books if not b.isolated and b.pos.size]
        account: AccountMargin = evaluate(inst.rulebook, legs, margin_mode="cross",
                                          wallet_balance=self._cross_wallet(), taker_fee=inst.taker_fee)
        return next(p for p in account.positions if p.symbol == inst.symbol)

    def get_margin_state(self, data) -> PositionMargin | None:
        """Tier, rates, maintenance and initial margin, equity, margin ratio, liquidation and
        bankruptcy price of ``data``'s position at its last mark (None when flat)."""
        book = self._book(data)
        if not self.positions[data].size:
            return None
        price = book.valprice if book.valprice == book.valprice else self.positions[data].price
        return self._state_at(book, price)

    def max_open_size(self, data, price: float | None = None, isbuy: bool = True,
                      fraction: float = 1.0) -> float:
        """Units ``fraction`` of the available balance can still open on ``data`` at ``price``
        (default: the close) in the direction of ``isbuy``: initial margin and opening fee within
        it, and the position within the notional its tier allows at this leverage, as the order
        check sees it; down to the lot size (what :class:`btperp.bt.MarginSizer` sizes with)."""
        book = self._book(data)
        price = data.close[0] if price is None else price
        self._update_table(book)
        inst = book.inst
        held = self.positions[data].size
        same_side = held if (held > 0) == isbuy else 0.0
        # 1 % under the tier cap: a market order sized at the close fills at the next open, and a
        # fill above the cap is refused (as on the exchange)
        cap = book.table.max_notional_for(inst.leverage) * 0.99 - abs(same_side) * price
        # what the rulebook adds to notional / leverage per unit (Bybit's reserved fee to close)
        extra = _initial_margin(book, 1.0 if isbuy else -1.0, price) - price / inst.leverage
        size = max_open_size(self.cash * fraction, price, inst.leverage, inst.taker_fee, max(cap, 0.0),
                             extra_per_unit=extra)
        lot = inst.lot_size
        return math.floor(size / lot + 1e-9) * lot if lot else size

    def add_margin(self, data, amount: float) -> float:
        """Move ``amount`` USDT from the available balance into ``data``'s isolated margin
        (negative: take it back out, down to the initial margin). Returns the new margin."""
        book = self._book(data)
        if not book.isolated:
            raise InputError(f"{book.inst.symbol} is in cross margin: its margin is the cross wallet",
                             field="margin_mode")
        pos = self.positions[data]
        if not pos.size:
            raise InputError(f"{book.inst.symbol} has no open position", field="data")
        if not math.isfinite(amount):
            raise InputError(f"amount must be a finite number, got {amount!r}", field="amount")
        if amount > self.cash + 1e-9:
            raise InputError(f"amount {amount:,.2f} exceeds the available balance {self.cash:,.2f}",
                             field="amount")
        floor = _initial_margin(book, pos.size, pos.price)
        if amount < 0 and book.margin + amount < floor - 1e-9:
            raise InputError(f"removing {-amount:,.2f} would leave {book.margin + amount:,.2f}, below the "
                             f"initial margin {floor:,.2f}", field="amount")
        book.margin += amount
        book.dirty = True
        book.rev += 1
        self._version += 1
        self.cash = self._available()
        self.margin_changes.append(MarginChange(_utc(book.dt), book.inst.symbol, book.position_id,
                                                float(amount), book.margin))
        return book.margin

    def _book(self, data) -> _Book:
        if self._books is None:
            self._setup()
        try:
            return self._by_data[data]
        except KeyError:
            raise InputError(f"{getattr(data, '_name', data)!r} is not a data feed of this run",
                             field="data") from None

    def ledger(self) -> dict[str, float]:
        """The account's totals (USDT)."""
        return {"initial_cash": self.startingcash, "deposits": self.deposits,
                "realized_pnl": self.realized_pnl, "trading_fees": self.trading_fees,
                "liquidation_fees": self.liquidation_fees, "funding_paid": self.funding_paid,
                "wallet_balance": self._wallet, "unrealized_pnl": self._unrealized,
                "value": self._value, "insurance_fund": self.insurance_fund,
                "liquidations": len(self.liquidations)}


def install(cerebro: bt.Cerebro, exchange: str = "binance-usdm", cash: float = 10_000.0,
            leverage: float = 1.0, margin_mode: str = "isolated", *,
            per_data: Mapping[str, Mapping[str, Any]] | None = None, history: Any = None,
            history_every: str = "bar", **options) -> PerpBroker:
    """Make ``cerebro`` trade perpetual futures on ``exchange``; returns the broker.

    ``per_data`` maps a feed's name (or symbol) to its own settings (``leverage``,
    ``margin_mode``, fees, ...); ``options`` are :class:`PerpBroker` params for every feed.
    ``history="DIR"`` records the margin history of each run there (:class:`btperp.bt.PerpHistory`;
    ``history_every="change"`` writes a row only when a position's state changes). With
    backtrader's standard observers on (``stdstats``), liquidations are marked on its plot.
    """
    if not (isinstance(cash, (int, float)) and math.isfinite(cash) and cash >= 0):
        raise InputError(f"cash must be a number >= 0, got {cash!r}", field="cash")
    broker = PerpBroker(exchange=exchange, cash=float(cash), leverage=leverage,
                        margin_mode=margin_mode, **options)
    for key, settings in (per_data or {}).items():
        broker.configure(key, **settings)
    cerebro.broker = broker
    if cerebro.p.stdstats:                      # beside backtrader's buy/sell markers
        from .observers import Liquidations
        from .plot import prepare_headless
        cerebro.addobservermulti(Liquidations)
        prepare_headless()                      # cerebro.plot() without a screen: Agg, not TkAgg
    if history is not None:
        from .history import PerpHistory
        if history_every not in ("bar", "change"):
            raise InputError(f"history_every must be 'bar' or 'change', got {history_every!r}",
                             field="history_every")
        cerebro.addanalyzer(PerpHistory, path=str(history), every=history_every)
    return broker


__all__ = ["PerpBroker", "PerpCommInfo", "Instrument", "Liquidation", "Fill", "MarginChange",
           "FundingPayment", "MarginCall",
           "Rejection", "install"]
