"""PerpBroker: a backtrader broker that margins, funds and liquidates like a perpetual-futures exchange.

``btperp.install(cerebro, exchange="binance-usdm", cash=10_000, leverage=5)`` replaces cerebro's
broker; strategies do not change. This module is an adapter: the account (wallet, isolated margins,
fees, funding, insurance fund, liquidations, margin calls, their records and the order of a bar's
events) is the pure core's :class:`btperp.account.Account`; the broker reads each feed's bar into
the account's legs (:class:`Book`), turns backtrader's orders into fills at their time on the bar's
path (:mod:`btperp.intrabar`) and the account's liquidations into orders the strategy sees.

What backtrader's API shows
    * ``broker.getvalue()`` = wallet + unrealized PnL at the mark close (Binance "margin
      balance"), ``broker.getcash()`` = the available balance (cross wallet + cross unrealized
      PnL − cross positions' initial margin, Binance "available balance");
    * ``broker.fills``, ``liquidations``, ``funding_payments``, ``margin_calls``,
      ``margin_changes``, ``rejections``: the account's records; ``broker.ledger()`` its totals.

Each bar, in this order (``next``):
    1. orders the strategy sent last bar are checked: an opening order is rejected
       (``Order.Margin``, reason in ``order.info.margin_reason``) when its initial margin plus fee
       exceeds the available balance (counting what a reducing part releases and realizes) or its
       notional is above what the tier allows at the leverage;
    2. funding events at the bar's open are paid or received by the positions held then, on the
       mark price at the event (from the isolated margin, or the wallet in cross);
    3. a position whose trigger price (mark by default) *opens* beyond its liquidation price is
       liquidated at the open, before any order can fill;
    4. pending orders execute by backtrader's rules (market at the open, limits and stops against
       the bar's last-price range), each at its time on the bar's path, after the account has
       checked every position up to that time (a liquidation first cancels the position's
       orders); fees are taker, maker for a limit filled at its limit price;
    5. funding events later in the bar, paid by the positions held after the fills;
    6. positions are checked against the rest of the trigger path (per position in isolated
       margin, on the account in cross); a liquidated position's pending orders are cancelled
       and it is closed by an order marked ``order.info.liquidation`` that the strategy sees in
       ``notify_order``/``notify_trade`` in this same bar (with ``liquidation="partial"``, a
       larger position is first reduced by such an order marked ``order.info.partial``, and its
       remainder checked on the rest of the path); then margin calls: a margin ratio
       crossing a level (default 0.8) is recorded and the owning strategy's
       ``notify_margin_call(event)`` is called if it has one;
    7. value and available balance at the mark close.

Funding paid is also added to the position's ``d_credit`` so that, like backtrader's interest,
it is charged to the trade when it closes (``trade.pnlcomm`` is net of fees and funding).
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import backtrader as bt
import numpy as np
from backtrader.order import BuyOrder, Order, SellOrder

from ..account import (DUST, Account, Clock, Fill, FundingPayment, Instrument, Leg, Liquidation,
                       Listener, MarginCall, MarginChange, Rejection)
from ..errors import DataError, DataWarning, InputError, outside_stacklevel
from ..intrabar import END, Intrabar, OrderKind, detail_path, low_first, order_time, vertices
from ..liquidation import FillPolicy, LiquidationMode
from ..margin import MarginMode, PositionMargin, Side
from ..rules import get_rulebook
from ..symbols import to_inverse, to_unified
from ..tiers import TierHistory, TierTable
from .feed import BT_EPOCH, PerpData
from .commission import PerpCommInfo
from .inverse import InverseCommInfo, Mirror, MirrorPosition
from .sizers import make_fractional

#: Order types whose fill at their own limit price rests on the book (maker fee).
_LIMIT_TYPES = (Order.Limit, Order.StopLimit, Order.StopTrailLimit)


def _utc(num: float) -> datetime:
    return bt.num2date(num).replace(tzinfo=timezone.utc)


def _to_num(when: datetime) -> float:
    return (when.timestamp()) / 86_400 + BT_EPOCH


# --- commission info -------------------------------------------------------------------------

# --- per-feed state --------------------------------------------------------------------------

class _BtClock(Clock):
    """backtrader's date numbers (days since year 1) as the account's bar keys."""

    to_datetime = staticmethod(_utc)
    to_key = staticmethod(_to_num)


class Book(Leg):
    """The account's :class:`~btperp.account.Leg` of one data feed, and what the broker needs to
    read it: the feed's lines, its mark and funding readers, its detail bars (plain attributes:
    read every bar)."""

    def __init__(self, data, inst: Instrument, comminfo: PerpCommInfo, pos, mirror: Mirror | None = None,
                 lot_size: float | None = None):
        super().__init__(inst, pos, [_to_num(t) for t in inst.tiers.change_times()])
        self.data = data
        self.comminfo = comminfo
        self.mirror = mirror
        """Coin-margined: the conversion to the account's mirror (:mod:`btperp.bt.inverse`); None:
        linear (the account's units are the strategy's)."""
        self.lot_size = lot_size
        """Order sizes are rounded down to it, in the strategy's units (contracts when inverse)."""
        self.owner = None               # the strategy that last traded it
        self.fallback_bars = 0
        self.paths: tuple | None = None     # the bar's (trigger, last) paths, if built
        self.coarse: tuple | None = None    # the bar's own paths (``paths`` may go through detail)
        self.detail = getattr(data, "btperp_detail", None)      # finer bars (btperp.attach_detail)
        self.span = None                # (first row, end row) of the detail bars on the path
        self.row = -1
        lines = data.lines
        self.l_dt, self.l_o, self.l_h, self.l_l = lines.datetime, lines.open, lines.high, lines.low
        self.l_c = lines.close
        if isinstance(data, PerpData):
            self.l_mo, self.l_mh, self.l_ml, self.l_mc = (lines.mark_open, lines.mark_high,
                                                          lines.mark_low, lines.mark_close)
            self.l_fpu, self.l_frate = lines.funding_per_unit, lines.funding_rate
            self.l_fopen = lines.funding_open_per_unit
        self.reader = _read_last
        self.funding = _no_funding

    def new_bar(self, key: float) -> None:
        super().new_bar(key)
        self.paths = self.coarse = None

    def now_key(self) -> float:
        return self.dt if self.dt == self.dt else self.data.datetime[0]

    def stamp(self):
        return self.data.datetime.datetime()

    def own_path(self):
        """The bar's trigger path; coin-margined: in the mirror, its order of extremes decided on
        the USD prices (the mirror's high is the USD low)."""
        if self.mirror is None or self._path is not None:
            return super().own_path()
        if not self.read:
            self.reader(self)
        r = self.mirror.price
        usd_low_first = low_first(r(self.t_open), r(self.t_high), r(self.t_low), self.inst.intrabar,
                                  -self.side0)
        self.low_first = not bool(usd_low_first)
        self._path = vertices(self.t_open, self.t_high, self.t_low, self.t_close, self.low_first)
        return self._path

    _TICKS = ("tick_open", "tick_high", "tick_low", "tick_close")

    def coarse_paths(self) -> tuple:
        """The bar's own trigger and last-price paths, four vertices each (built once per bar)."""
        if self.coarse is None:
            trigger = self.own_path()
            data = self.data
            last = [getattr(data, name, None) for name in self._TICKS]
            o, h, lo, c = (x if x is not None else line[0] for x, line in
                           zip(last, (data.open, data.high, data.low, data.close)))
            # the last prices stay in USD (orders are priced in USD): their own order of extremes
            first = self.low_first if self.mirror is None else not self.low_first
            self.coarse = (trigger, vertices(o, h, lo, c, first))
        return self.coarse

    def bar_paths(self) -> tuple:
        """The bar's trigger path and last-price path (built once per bar, when needed): through its
        detail bars where they cover it, else the bar's own (:meth:`coarse_paths`)."""
        if self.paths is not None:
            return self.paths
        paths = list(self.coarse_paths())
        self.span = None
        detail = self.detail
        rows = detail.bars(self.dt) if detail is not None else None
        if detail is not None and rows is None:
            detail.missing.add(self.dt)
        elif rows is not None:
            i0, i1 = rows
            trig = detail.mark if self.inst.trigger == "mark" else detail.last
            # each detail bar's path; its order of extremes decided on its trigger (or last) series
            lead = next(x for x in (trig, detail.last, detail.mark) if x is not None)
            o_, h_, l_, _ = (x[i0:i1] for x in lead)
            firsts = low_first(o_, h_, l_, self.inst.intrabar, self.side0)
            for k, series in ((0, trig), (1, detail.last)):
                if series is not None and not any(np.isnan(x[i0:i1]).any() for x in series):
                    paths[k] = detail_path(*(x[i0:i1] for x in series), firsts)
                    if k == 0:                  # times on the trigger path name a detail bar
                        self.span = (i0, i1)
        self.paths = tuple(paths)
        return self.paths

    def trigger_path(self):
        return self.bar_paths()[0]

    def time_at(self, t: float, clock=None) -> datetime:
        """When bar time ``t`` happened: the open of the detail bar holding it, else the bar's open."""
        if self.span is None:
            return _utc(self.dt)
        i0, i1 = self.span
        j = min(int(t * (i1 - i0) + 1e-9), i1 - i0 - 1)
        return _utc(self.detail.times[i0 + j])

    def bar_extremes(self, long: bool) -> tuple[float, float]:
        """The bar's adverse mark and last-price extremes (recorded with a liquidation)."""
        if self.inst.trigger == "mark":
            last = self._last_extreme(long)
            return (self.t_low if long else self.t_high), last
        m = self.mirror
        if m is not None:                   # in USD on the USD side (the mirror's long is a short)
            mark_x, last_x = self._usd_extremes(not long)
            return m.price(mark_x), m.price(last_x)
        return self._usd_extremes(long)

    def _last_extreme(self, long: bool) -> float:
        """The bar's adverse last-price extreme, in the account's (mirror's) prices."""
        data, m = self.data, self.mirror
        if m is None:
            return data.low[0] if long else data.high[0]
        return m.price(data.high[0] if long else data.low[0])   # the mirror's long: the USD high

    def _usd_extremes(self, long: bool) -> tuple[float, float]:
        """The feed's adverse mark and last extremes of a ``long`` (USD side) with trigger='last'."""
        data = self.data
        last = data.low[0] if long else data.high[0]
        if isinstance(data, PerpData):
            return _now(self.l_ml if long else self.l_mh), last
        table = getattr(data, "btperp_market", None)
        if table is not None and self.row >= 0:
            return table.columns["mark_low" if long else "mark_high"][self.row], last
        return last, last


def _fallback(book: Book, what: str) -> None:
    """A bar without a mark price: an error, or its last prices with ``mark_fallback='last'``."""
    if book.inst.mark_fallback != "last":
        raise DataError(f"{book.inst.symbol}: no mark price for the bar at "
                        f"{_utc(book.dt):%Y-%m-%d %H:%M} UTC ({what}); add mark prices "
                        f"(btperp.attach) or pass mark_fallback='last'", timestamp=_utc(book.dt))
    book.fallback_bars += 1
    data = book.data
    _set(book, data.open[0], data.close[0], (data.open[0], data.high[0], data.low[0], data.close[0]))


def _set(book: Book, mark_open: float, mark_close: float, trigger: tuple) -> None:
    """The bar's mark open and close and its trigger series (open, high, low, close), in USD, into
    the account's leg; coin-margined: as the mirror's (1/P, high and low swapped)."""
    m = book.mirror
    if m is not None:
        mark_open, mark_close, trigger = m.price(mark_open), m.price(mark_close), m.bar(*trigger)
    book.mark_open, book.mark_close = mark_open, mark_close
    book.t_open, book.t_high, book.t_low, book.t_close = trigger


def _now(buf) -> float:
    """A line's value at the current bar (``buf[0]`` without the property lookups: read per bar)."""
    return buf.array[buf._idx]


def _take(book: Book, mo, mh, ml, mc, last: Callable[[], tuple], what: str) -> None:
    """Keep the bar's mark prices and its trigger series (the mark, or ``last()``'s last prices);
    a NaN mark falls back (:func:`_fallback`, ``what`` says where it was)."""
    if mo != mo or mh != mh or ml != ml or mc != mc:            # NaN
        return _fallback(book, what)
    _set(book, mo, mc, (mo, mh, ml, mc) if book.inst.trigger == "mark" else tuple(last()))


def _read_perp(book: Book) -> None:
    """PerpData: the bar's mark prices (and last prices when they trigger)."""
    book.read = True
    _take(book, _now(book.l_mo), _now(book.l_mh), _now(book.l_ml), _now(book.l_mc),
          lambda: (_now(book.l_o), _now(book.l_h), _now(book.l_l), _now(book.l_c)),
          "the feed's mark lines are NaN")


def _split(per_unit, at_open, rate, book: Book):
    """(total per unit, part at the bar's open, rate) of the bar's funding, or None; coin-margined:
    the mirror's (:meth:`btperp.bt.inverse.Mirror.funding`)."""
    m = book.mirror
    mark_open = book.mark_open if m is None else m.price(book.mark_open)       # USD
    if per_unit != per_unit:
        if rate != rate:
            return None
        per_unit = rate * mark_open         # events whose mark is missing (mark_fallback='last')
        at_open = per_unit if at_open == at_open else math.nan
    if m is not None:
        return m.funding(per_unit, at_open, rate, mark_open, m.price(book.mark_close))
    return per_unit, at_open if at_open == at_open else 0.0, rate


def _funding_perp(book: Book):
    return _split(_now(book.l_fpu), _now(book.l_fopen), _now(book.l_frate), book)


def _read_perp_tick(book: Book) -> None:
    """A replayed PerpData: the source bar (``data.tick_*``, filled by the replayer), not the bar
    being built, whose mark low is the lowest since the period opened (:mod:`btperp.bt.resample`)."""
    book.read = True
    d = book.data
    _take(book, d.tick_mark_open, d.tick_mark_high, d.tick_mark_low, d.tick_mark_close,
          lambda: (d.tick_open, d.tick_high, d.tick_low, d.tick_close), "the feed's mark lines are NaN")


def _funding_perp_tick(book: Book):
    d = book.data
    return _split(d.tick_funding_per_unit, d.tick_funding_open_per_unit, d.tick_funding_rate, book)


def _read_table(book: Book) -> None:
    """A feed with :func:`btperp.attach`: the bar's row in the attached table."""
    book.read = True
    table = book.data.btperp_market
    i = book.row = table.row(book.dt)
    cols = table.columns
    if i < 0:
        return _fallback(book, "no row in the attached table")
    _take(book, cols["mark_open"][i], cols["mark_high"][i], cols["mark_low"][i], cols["mark_close"][i],
          lambda: (_now(book.l_o), _now(book.l_h), _now(book.l_l), _now(book.l_c)), "its mark is NaN")


def _funding_table(book: Book):
    i = book.row
    if i < 0:
        return None
    cols = book.data.btperp_market.columns
    return _split(cols["funding_per_unit"][i], cols["funding_open_per_unit"][i], cols["funding_rate"][i],
                  book)


def _read_last(book: Book) -> None:
    """A feed with no mark prices at all (allowed only with ``mark_fallback='last'``)."""
    book.read = True
    _fallback(book, "the feed has no mark prices")


def _no_funding(book: Book):
    return None


# --- the broker ------------------------------------------------------------------------------

class PerpBroker(bt.brokers.BackBroker):
    """backtrader broker for linear perpetual futures (see the module docstring).

    Params (each but ``cash`` can be overridden per data with :meth:`configure`):

    - ``exchange``: ``binance-usdm`` (default), ``bybit`` or ``hyperliquid``; coin-margined:
      ``binance-coinm`` or ``bybit-inverse`` (cash and value in the coin, sizes in contracts,
      prices in USD; :mod:`btperp.bt.inverse`)
    - ``contract_size``: coin-margined only, USD per contract (None: the feed's dataset's, as
      ``btperp fetch`` records it, else the exchange's: Binance BTCUSD 100, other COIN-M 10, Bybit 1)
    - ``leverage`` (1), ``margin_mode`` (``isolated`` | ``cross``)
    - ``maker_fee`` / ``taker_fee`` / ``liquidation_fee``: None = the exchange's standard rates
    - ``fill_policy``: ``bankruptcy`` (default) or ``fee`` (:mod:`btperp.liquidation`)
    - ``liquidation``: ``partial`` (default: a larger position is reduced first where the exchange
      does it, by its rule; :mod:`btperp.liquidation`) or ``full`` (every liquidation closes the
      whole position)
    - ``lot_size``: order sizes are rounded down to it (None: no rounding; coin-margined: 1
      contract)
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
        ("liquidation", "partial"),
        ("lot_size", None),
        ("trigger", "mark"),
        ("mark_fallback", None),
        ("intrabar", "path"),
        ("detail", None),
        ("margin_call_levels", (0.8,)),
        ("tiers", None),
        ("datadir", None),
        ("contract_size", None),
    )

    _INSTRUMENT_KEYS = ("exchange", "leverage", "margin_mode", "maker_fee", "taker_fee",
                        "liquidation_fee", "fill_policy", "liquidation", "lot_size", "trigger",
                        "mark_fallback", "intrabar", "tiers", "contract_size")

    def __init__(self):
        self._overrides: dict[Any, dict] = {}
        self._check_params("broker", {k: getattr(self.p, k) for k in self._INSTRUMENT_KEYS})
        super().__init__()

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
            get_rulebook(s["exchange"], inverse=True)
        if "margin_mode" in s:
            MarginMode.parse(s["margin_mode"])
        if "fill_policy" in s:
            FillPolicy.parse(s["fill_policy"])
        if "liquidation" in s:
            LiquidationMode.parse(s["liquidation"])
        if "intrabar" in s:
            Intrabar.parse(s["intrabar"])
        lev = s.get("leverage")
        if lev is not None and not (isinstance(lev, (int, float)) and math.isfinite(lev) and lev >= 1):
            raise InputError(f"{where}: leverage must be a number >= 1, got {lev!r}", field="leverage")
        cs = s.get("contract_size")
        if cs is not None and not (isinstance(cs, (int, float)) and not isinstance(cs, bool)
                                   and math.isfinite(cs) and cs > 0):
            raise InputError(f"{where}: contract_size must be a positive number (USD per contract), "
                             f"got {cs!r}", field="contract_size")
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
        levels = self.p.margin_call_levels
        levels = tuple(sorted(float(x) for x in ((levels,) if isinstance(levels, (int, float)) else levels or ())))
        if any(not 0 < x < 1 for x in levels):
            raise InputError(f"margin call levels must be between 0 and 1, got {levels}",
                             field="margin_call_levels")
        self.account = Account(self.cash, levels, listener=_Notifier(self), clock=_BtClock)
        """The account (:class:`btperp.account.Account`): wallet, legs, records."""
        self._books: list[Book] | None = None
        self._by_data: dict[Any, Book] = {}
        self._cash_version = -1
        self.open_positions = 0
        """Positions open after the last bar."""
        self._inflight = None                   # the order being filled (btperp.intrabar)
        self._fill_when = None                  # the detail bar a fill happens in

    def set_cash(self, cash):
        super().set_cash(cash)
        self.account.wallet = cash

    setcash = set_cash

    # The account's records and totals (btperp.account.Account)

    liquidations = property(lambda self: self._records("liquidations", "liquidation"))
    fills = property(lambda self: self._records("fills", "fill"))
    funding_payments = property(lambda self: self._records("funding_payments", "funding_payment"))
    margin_calls = property(lambda self: self._records("margin_calls", "margin_call"))
    margin_changes = property(lambda self: self.account.margin_changes)
    rejections = property(lambda self: self.account.rejections)
    deposits = property(lambda self: self.account.deposits)
    realized_pnl = property(lambda self: self.account.realized_pnl,
                            doc="Realized PnL of every fill and liquidation so far.")
    trading_fees = property(lambda self: self.account.trading_fees)
    liquidation_fees = property(lambda self: self.account.liquidation_fees)
    fees_paid = property(lambda self: self.account.fees_paid,
                         doc="Trading fees plus liquidation fees paid so far.")
    funding_paid = property(lambda self: self.account.funding_paid,
                            doc="Net funding paid so far (negative when received).")
    insurance_fund = property(lambda self: self.account.insurance_fund,
                              doc="What the exchange's insurance fund gained (+) or covered (−) over the run.")
    wallet_balance = property(lambda self: self.account.wallet)

    def _records(self, name: str, how: str) -> list:
        """The account's records ``name``; coin-margined: in contracts and USD (converted once each,
        :class:`btperp.bt.inverse.Mirror`)."""
        records = getattr(self.account, name)
        mirrors = getattr(self, "_mirrors", None)
        if not mirrors:
            return records
        cache = self.__dict__.setdefault("_converted", {}).setdefault(name, [])
        for record in records[len(cache):]:
            cache.append(getattr(mirrors[record.symbol], how)(record))
        return cache

    def mirror(self, data) -> Mirror | None:
        """The conversion of ``data``'s coin-margined contracts to the account's mirror (None: linear)."""
        return self.book(data).mirror

    @property
    def books(self) -> list[Book]:
        """The account's legs, one per data feed (empty before the first bar)."""
        return self._books or []

    def stop(self):
        super().stop()
        for book in self._books or []:
            if book.fallback_bars:
                warnings.warn(f"{book.inst.symbol}: {book.fallback_bars} bars had no mark price; their "
                              f"last prices were used (mark_fallback='last')", DataWarning,
                              stacklevel=outside_stacklevel())
            detail = book.detail
            if detail is not None and detail.missing:
                first = _utc(min(detail.missing))
                warnings.warn(f"{book.inst.symbol}: {len(detail.missing)} bars in which a liquidation, "
                              f"margin call or fill could happen had no {detail.timeframe} detail (the "
                              f"first at {first:%Y-%m-%d %H:%M} UTC); their own prices were used",
                              DataWarning, stacklevel=outside_stacklevel())

    def _setup(self):
        cerebro = getattr(self, "cerebro", None)
        datas = list(cerebro.datas) if cerebro is not None else list(self.positions)
        tier_files: dict[str, Any] = {}
        self._books = []
        self._mirrors: dict[str, Mirror] = {}
        kinds: dict[bool, str] = {}
        for data in datas:
            # the symbol's spelling depends on the exchange (coin-margined: BTC/USD:BTC), which its
            # own settings may set
            exchange = self.p.exchange
            for key in (data._name, data):
                exchange = self._overrides.get(key, {}).get("exchange", exchange)
            symbol = self._symbol_of(data, get_rulebook(exchange, inverse=True).inverse)
            settings = {k: getattr(self.p, k) for k in self._INSTRUMENT_KEYS}
            for key in (data._name, symbol, data):
                if key in self._overrides:
                    settings.update(self._overrides[key])
            rulebook = get_rulebook(settings["exchange"], inverse=True)
            symbol = self._symbol_of(data, rulebook.inverse)
            kinds.setdefault(rulebook.inverse, symbol)
            if len(kinds) > 1:
                raise InputError(f"one account settles in one currency: {kinds[True]} is coin-margined "
                                 f"and {kinds[False]} is not; run them in separate backtests",
                                 field="exchange")
            mirror = None
            if rulebook.inverse:
                coin = symbol.rsplit(":", 1)[1]
                coins = {s.rsplit(":", 1)[1] for s in self._mirrors} | {coin}
                if len(coins) > 1:
                    raise InputError(f"a coin-margined account is one coin's wallet: the feeds settle in "
                                     f"{', '.join(sorted(coins))}; run each coin in its own backtest",
                                     field="data")
                detail = settings.get("detail", self.p.detail) or getattr(data, "btperp_detail", None)
                if detail is not None:
                    raise InputError(f"{symbol}: detail bars are not supported for coin-margined "
                                     f"contracts yet; leave detail=None", field="detail")
                cs = settings["contract_size"]
                if cs is None:                  # the dataset's own (btperp fetch records it)
                    cs = self._feed_attrs(data).get("contract_size")
                if cs is None:
                    cs = rulebook.default_contract_size(symbol.split("/")[0])
                mirror = self._mirrors[symbol] = Mirror(float(cs))
                if settings["lot_size"] is None:
                    settings["lot_size"] = 1.0          # whole contracts, as the exchanges trade them
            elif settings["contract_size"] is not None:
                raise InputError(f"{symbol}: contract_size is for coin-margined contracts "
                                 f"(binance-coinm, bybit-inverse); {rulebook.name} is sized in base units",
                                 field="contract_size")
            if self.p.detail is not None and getattr(data, "btperp_detail", None) is None:
                from .feed import attach_detail
                attach_detail(data, self.p.detail, datadir=self.p.datadir)
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
                                 f"leverage(n); coin-margined: bounded in the coin) or import its "
                                 f"history with `btperp data import-tiers`", field="tiers")
            inst = Instrument(
                symbol=symbol, rulebook=rulebook, tiers=tiers, leverage=float(settings["leverage"]),
                margin_mode=MarginMode.parse(settings["margin_mode"]),
                maker_fee=rulebook.maker_fee if settings["maker_fee"] is None else float(settings["maker_fee"]),
                taker_fee=rulebook.taker_fee if settings["taker_fee"] is None else float(settings["taker_fee"]),
                liquidation_fee=(rulebook.liquidation_fee_rate if settings["liquidation_fee"] is None
                                 else float(settings["liquidation_fee"])),
                fill_policy=FillPolicy.parse(settings["fill_policy"]),
                lot_size=(settings["lot_size"] if mirror is None or not settings["lot_size"]
                          else settings["lot_size"] * mirror.contract_size),
                trigger=settings["trigger"],
                mark_fallback=settings["mark_fallback"], intrabar=Intrabar.parse(settings["intrabar"]),
                liquidation=LiquidationMode.parse(settings["liquidation"]))
            top = max(table.tiers[0].max_leverage for _, table in tiers.versions)
            if inst.leverage > top * (1 + 1e-12):       # every order would be refused: say so now
                raise InputError(f"{symbol}: leverage {inst.leverage:g}x is above the {top:g}x that "
                                 f"its tier tables on {rulebook.name} ever allow", field="leverage")
            if mirror is None:
                comminfo = PerpCommInfo(commission=inst.taker_fee, leverage_setting=inst.leverage,
                                        lot_size=inst.lot_size)
                pos = self.positions[data]
            else:
                comminfo = InverseCommInfo(commission=inst.taker_fee, leverage_setting=inst.leverage,
                                           lot_size=settings["lot_size"], contract_size=mirror.contract_size)
                pos = MirrorPosition(self.positions[data], mirror)
            book = Book(data, inst, comminfo, pos, mirror, settings["lot_size"])
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
                              DataWarning, stacklevel=outside_stacklevel())
            self._books.append(self.account.add(book))
            self._by_data[data] = book
        for strategy in getattr(cerebro, "runningstrats", None) or []:
            make_fractional(strategy)

    @staticmethod
    def _scan_marks(book: Book) -> None:
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
    def _feed_attrs(data) -> Mapping[str, Any]:
        """The attrs of the frame behind a feed (PerpData, or btperp.attach's table), or {}."""
        frame = getattr(data.p, "dataname", None) if isinstance(data, PerpData) else None
        market = getattr(data, "btperp_market", None)
        if frame is None and market is not None:
            frame = market.frame
        return getattr(frame, "attrs", None) or {}

    @staticmethod
    def _symbol_of(data, inverse: bool = False) -> str:
        symbol = getattr(data.p, "symbol", None) if isinstance(data, PerpData) else None
        market = getattr(data, "btperp_market", None)
        symbol = symbol or (market.symbol if market is not None else None) or data._name
        if not symbol:
            raise InputError("a data feed has neither a symbol nor a name: pass name='BTCUSDT' to "
                             "the feed (or use btperp.load_feed)", field="symbol")
        return to_inverse(symbol) if inverse else to_unified(symbol)

    def getcommissioninfo(self, data):
        """The feed's PerpCommInfo (backtrader's own lookup is by name, and feeds may share one)."""
        book = self._by_data.get(data) if self._books is not None else None
        if book is not None:
            return book.comminfo
        return super().getcommissioninfo(data)

    # --- orders ----------------------------------------------------------------------------

    def _round_lot(self, data, size):
        lot = self.book(data).lot_size
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
        when = _utc(data.datetime[0]) if len(data) else None
        self.account.reject(self._by_data.get(data), data._name or "?", when, order.size,
                            order.created.price or 0.0, reason)

    def _margin_refusal(self, order, reason):
        order.addinfo(margin_reason=reason)
        self._record_rejection(order, reason)
        order.margin()
        self.notify(order)
        self._ococheck(order)
        self._bracketize(order, cancel=True)

    def check_submitted(self):
        """Accept or refuse (``Order.Margin``) the orders sent since the last bar, in order, each
        against the position and available balance the orders before it leave (as backtrader's
        ``BackBroker`` does): a closing part needs no margin and frees what it releases; an opening
        part needs its initial margin and fee. A bracket's stop and limit children are alternatives
        (one cancels the other) that reduce the position their parent leaves: each is checked
        against that, and neither changes what later orders see."""
        available = self.cash
        projected: dict[Any, float] = {}
        after: dict[int, tuple[float, float]] = {}     # order ref -> (position, available) after it
        while self.submitted:
            order = self.submitted.popleft()
            if self._take_children(order) is None:
                continue
            data = order.data
            book = self._by_data.get(data)
            if book is None:
                self.submit_accept(order)
                continue
            parent = order.parent
            child = parent is not None and parent is not order and parent.ref in after
            held = book.pos.size                # the account's units (the mirror's, coin-margined)
            size0, avail = after[parent.ref] if child else (projected.get(data, held), available)
            size = order.executed.remsize
            price = order.created.price or data.close[0]
            if book.mirror is not None:
                size, price = book.mirror.size(size), book.mirror.price(price)
            closing = min(abs(size), abs(size0)) if size * size0 < 0 else 0.0
            opened = abs(size) - closing
            # what a close of the position held now releases (a projected one's entry is not known yet)
            release = (self.account.release_estimate(book, size0, closing, price)
                       if closing and size0 == held else 0.0)
            cost = 0.0
            if opened > DUST * abs(size):
                reason, cost = self.account.opening_problem(book, size0 + size, opened, price,
                                                            release, avail)
                if reason:
                    self._margin_refusal(order, reason)
                    continue
            if not child:
                available += release - cost
                projected[data] = size0 + size
                after[order.ref] = (projected[data], available)
            self.submit_accept(order)

    @staticmethod
    def _is_maker(order, price) -> bool:
        """A limit order filled at its own limit price rested on the book: maker."""
        if order.exectype in _LIMIT_TYPES:
            limit = order.created.pricelimit if order.exectype != Order.Limit else order.created.price
            return limit is not None and price == limit
        return False

    def _execute(self, order, ago=None, price=None, cash=None, position=None, dtcoc=None):
        """Fill ``order`` (or the part of it the filler allows) at ``price``: the account books it
        (:meth:`btperp.account.Account.fill`), backtrader's order and notifications follow."""
        if ago is None or price is None:
            return          # pseudo-executions are BackBroker.check_submitted's; ours does not use them
        data = order.data
        book = self._by_data[data]
        # btperp.intrabar: what the path reaches before this fill happens first; a liquidation of
        # this order's position then cancels it
        t = self._order_time(order, book)
        if t > 0.0 and any(b.pos.size for b in self._books):
            self._inflight = order
            self.account.check(t)
            self._inflight = None
            if not order.alive():
                return
        if self.p.filler is None:
            size = order.executed.remsize
        else:
            size = self.p.filler(order, price, ago)
            if not order.isbuy():
                size = -size
        pos = self.positions[data]              # the strategy's (contracts and USD, coin-margined)
        m = book.mirror
        maker = self._is_maker(order, price)
        result = self.account.fill(book, size if m is None else m.size(size),
                                   price if m is None else m.price(price), maker, t,
                                   self._fill_when or _utc(book.dt), order.ref)
        if result.closed or result.opened:
            if order.owner is not None:
                book.owner = order.owner
            closedcomm = result.closed_fee
            if result.closed and self.p.int2pnl:
                closedcomm += self.d_credit.pop(data, 0.0)      # funding since the last close
            filled, closed, opened = ((result.filled, result.closed, result.opened) if m is None else
                                      (m.contracts(result.filled), m.contracts(result.closed),
                                       m.contracts(result.opened)))
            order.execute(dtcoc or data.datetime[ago], filled, price,
                          closed, result.closed_value, closedcomm, opened,
                          result.opened_value, result.opened_fee, book.comminfo.get_margin(price),
                          result.pnl, pos.size, pos.price)
            order.addcomminfo(book.comminfo)
            self.notify(order)
            self._ococheck(order)
            self.cash = self.account.available()
        if result.refusal:
            self._margin_refusal(order, result.refusal)

    # --- value -----------------------------------------------------------------------------

    def _get_value(self, datas=None, lever=False):
        """Value = wallet + unrealized PnL at the mark close; cash = the available balance."""
        while self._cash_addition:
            c = self._cash_addition.popleft()
            self._fundshares += c / self._fundval
            self.account.deposit(c)
        if datas is not None and len(datas) == 1:
            data = datas[0]
            book = self._by_data.get(data) if self._books is not None else None
            if book is not None and book.mirror is not None:     # position value in the coin
                return self.positions[data].size * book.mirror.contract_size / data.close[0]
            return self.positions[data].size * data.close[0]
        account = self.account
        unrealized, notional, held = account.unrealized()
        self._unrealized = unrealized
        self.open_positions = held
        self._value = account.wallet + unrealized
        if not self._books:
            self.cash = account.wallet
        elif notional or account.version != self._cash_version:     # flat and unchanged: same cash
            self.cash = account.available()
        self._cash_version = account.version
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
        account = self.account
        held = False
        for book in self._books:
            buf = book.l_dt
            if buf.lencount and buf.array[buf._idx] != book.dt:
                account.new_bar(book, buf.array[buf._idx])
                held = held or bool(book.pos.size)
            else:
                book.fresh = False

        if self.submitted and self.p.checksubmit:
            self.check_submitted()

        if held:
            account.open_bar()                      # 2. funding at the open, 3. gaps at the open

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

        account.close_bar()                         # 5. funding later, 6. the rest of the path

        self._get_value()                           # 7.

    # --- fills inside the bar (btperp.intrabar) --------------------------------------------

    def _order_time(self, order, book: Book, coarse: bool = False) -> float:
        """Bar time at which ``order`` fills on the last-price path (btperp.intrabar); ``coarse``:
        on the bar's own four-vertex path (inf: the bar's range never reaches its price)."""
        ex = order.exectype
        if ex == Order.Close:
            return END
        if ex not in (Order.Limit, Order.Stop, Order.StopTrail, Order.StopLimit, Order.StopTrailLimit):
            return 0.0                              # market (and historical): at the open
        path = (book.coarse_paths() if coarse else book.bar_paths())[1]
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

    _TICKS = Book._TICKS

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

    # --- what the account reports (btperp.account.Listener) ---------------------------------

    def _default_owner(self):
        strats = getattr(getattr(self, "cerebro", None), "runningstrats", None)
        return strats[0] if strats else None

    def _margin_called(self, book: Book, event) -> None:
        """A margin call: the owning strategy's ``notify_margin_call(event)``, if it has one."""
        owner = book.owner or self._default_owner()
        handler = getattr(owner, "notify_margin_call", None)
        if handler is not None:
            handler(event)

    def _liquidated(self, book: Book, size: float, entry: float, record, closed_value: float) -> None:
        """The account closed ``book``'s position (or, a partial step, ``size`` of it): cancel its
        orders (the one being filled too) and show the strategy the close as a market order marked
        ``order.info.liquidation`` (and ``order.info.partial``)."""
        data = book.data
        for order in [o for o in self.pending if o is not None and o.data is data]:
            self.cancel(order)
        inflight = self._inflight
        if inflight is not None and inflight.data is data and inflight.alive():
            inflight.cancel()                   # the order being filled: not in pending just now
            self.notify(inflight)
            self._ococheck(inflight)
            self._bracketize(inflight, cancel=True)
        inst = book.inst
        owner = book.owner or self._default_owner()
        m = book.mirror
        if m is not None:                       # contracts and USD: the fill at 1/x
            size, entry, record = m.contracts(size), m.price(entry), m.liquidation(record)
        cls = SellOrder if size > 0 else BuyOrder
        fill = record.fill_price
        order = cls(owner=owner, data=data, size=abs(size), price=fill, exectype=Order.Market)
        order.addinfo(liquidation=True, trigger=inst.trigger, trigger_price=record.trigger_price,
                      bankruptcy_price=record.bankruptcy_price, insurance_flow=record.insurance_flow,
                      fill_policy=str(inst.fill_policy), partial=record.partial, step=record.step,
                      remaining=record.remaining)
        order.submit(self)
        order.accept(self)
        order.addcomminfo(book.comminfo)
        self.orders.append(order)
        comm = record.fee + (self.d_credit.pop(data, 0.0) if self.p.int2pnl else 0.0)
        left = math.copysign(record.remaining, size)          # a partial step leaves the rest
        order.execute(data.datetime[0], -size, fill, -size, closed_value, comm,
                      0.0, 0.0, 0.0, book.comminfo.get_margin(fill), record.pnl, left,
                      entry if left else 0.0)
        order.addinfo(entry_price=entry)
        self.notify(order)

    # --- helpers for strategies --------------------------------------------------------------

    def get_margin_state(self, data) -> PositionMargin | None:
        """Tier, rates, maintenance and initial margin, equity, margin ratio, liquidation and
        bankruptcy price of ``data``'s position at its last mark (None when flat); coin-margined:
        an :class:`btperp.inverse.InversePositionMargin` (contracts, USD prices, coin amounts)."""
        book = self.book(data)
        state = self.account.margin_state(book)
        if state is None or book.mirror is None:
            return state
        from ..inverse import InversePosition, InversePositionMargin, settle_coin
        m, pos = book.mirror, self.positions[data]
        mark = m.price(book.valprice if book.valprice == book.valprice else book.pos.price)
        inverse = InversePosition(book.inst.symbol, Side.LONG if pos.size > 0 else Side.SHORT,
                                  abs(pos.size), m.contract_size, pos.price, mark, book.inst.leverage,
                                  book.table, book.margin if book.isolated else None)
        return InversePositionMargin.from_mirror(inverse, state, settle_coin(book.inst.symbol))

    def max_open_size(self, data, price: float | None = None, isbuy: bool = True,
                      fraction: float = 1.0) -> float:
        """Units ``fraction`` of the available balance can still open on ``data`` at ``price``
        (default: the close) in the direction of ``isbuy``: initial margin and opening fee within
        it, and the position within the notional its tier allows at this leverage, as the order
        check sees it; down to the lot size (what :class:`btperp.bt.MarginSizer` sizes with)."""
        book = self.book(data)
        price = data.close[0] if price is None else price
        m = book.mirror
        if m is not None:                       # buying contracts sells the mirror
            return abs(m.contracts(self.account.max_open_size(book, m.price(price), not isbuy,
                                                              self.cash * fraction)))
        return self.account.max_open_size(book, price, isbuy, self.cash * fraction)

    def add_margin(self, data, amount: float) -> float:
        """Move ``amount`` USDT from the available balance into ``data``'s isolated margin
        (negative: take it back out, down to the initial margin). Returns the new margin."""
        margin = self.account.add_margin(self.book(data), amount, self.cash)
        self.cash = self.account.available()
        return margin

    def book(self, data) -> Book:
        """The account's leg of ``data`` (:class:`Book`)."""
        if self._books is None:
            self._setup()
        try:
            return self._by_data[data]
        except KeyError:
            raise InputError(f"{getattr(data, '_name', data)!r} is not a data feed of this run",
                             field="data") from None

    _book = book

    def ledger(self) -> dict[str, float]:
        """The account's totals (USDT)."""
        totals = self.account.totals()
        return {"initial_cash": self.startingcash, "deposits": totals["deposits"],
                "realized_pnl": totals["realized_pnl"], "trading_fees": totals["trading_fees"],
                "liquidation_fees": totals["liquidation_fees"], "funding_paid": totals["funding_paid"],
                "wallet_balance": totals["wallet_balance"], "unrealized_pnl": self._unrealized,
                "value": self._value, "insurance_fund": totals["insurance_fund"],
                "liquidations": totals["liquidations"],
                "partial_liquidations": totals["partial_liquidations"]}


class _Notifier(Listener):
    """Passes what the account reports to its broker (a module-level class: cerebro pickles the
    broker for optstrategy's processes)."""

    def __init__(self, broker: "PerpBroker"):
        self.broker = broker

    def liquidated(self, leg, size, entry, record, closed_value):
        self.broker._liquidated(leg, size, entry, record, closed_value)

    def margin_call(self, leg, event):
        self.broker._margin_called(leg, event)

    def funded(self, leg, payment):
        # charged to the trade when it closes, like backtrader's interest
        self.broker.d_credit[leg.data] += payment.payment


def install(cerebro: bt.Cerebro, exchange: str = "binance-usdm", cash: float = 10_000.0,
            leverage: float = 1.0, margin_mode: str = "isolated", *,
            per_data: Mapping[str, Mapping[str, Any]] | None = None, history: Any = None,
            history_every: str = "bar", **options) -> PerpBroker:
    """Make ``cerebro`` trade perpetual futures on ``exchange``; returns the broker.

    ``per_data`` maps a feed's name (or symbol) to its own settings (``leverage``,
    ``margin_mode``, fees, ...); ``options`` are :class:`PerpBroker` params for every feed.
    Coin-margined exchanges (``binance-coinm``, ``bybit-inverse``): ``cash`` in the coin, sizes in
    contracts (``contract_size=`` USD each, per data in ``per_data``), prices in USD
    (:mod:`btperp.bt.inverse`).
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
