"""``cerebro.resampledata`` and ``cerebro.replaydata`` on feeds that carry mark prices and funding.

backtrader's resampler and replayer build bars from the lines they know (OHLCV, open interest);
the mark and funding lines of a :class:`~btperp.bt.feed.PerpData` would keep whatever the line
buffer held (NaN when resampling, the first tick's values when replaying), and a plain feed with
:func:`~btperp.bt.feed.attach` would be looked up in its 1h table by the time of a 4h bar.

The aggregation is the one :func:`btperp.resample` applies to a frame: mark prices as prices
(first open, max high, min low, last close), funding as sums (rate, per unit, event count) with
the last event time, and the funding *at the bar's open* only from the first source bar's open
part (the rest is paid after the bar's fills, as for any coarse bar).

* :class:`PerpResampler` / :class:`PerpReplayer` (what ``PerpData.resample``/``replay`` add):
  btperp's bars are stamped with their **open** time, backtrader's resampler assumes close times
  (an open-stamped 1h feed would give 4h bars of 01:00-05:00). These group source bars by the
  period their open time falls in (minutes and days aligned to UTC midnight as
  :func:`btperp.resample` does, weeks from Monday, calendar months and years); a resampled bar is
  stamped with its period's open time (the bar ``load_feed(timeframe=...)`` would give), a
  replayed bar with the open time of its latest source bar (each replayed tick is a new time for
  the broker). The replayed tick's own values stay in ``data.tick_<line>`` (backtrader's
  convention, which the broker reads to liquidate and fund tick by tick).
* :func:`market_resampler`: for a plain feed with :func:`attach`, backtrader's own resampler
  keeps building the price bars (the feed's time convention is its own); btperp records, for
  each bar it delivers, the mark and funding of the source bars it consumed, and the broker reads
  those. A replayed plain feed needs nothing: each tick keeps its source time, found in the table.

Only ``timeframe`` and ``compression`` of backtrader's resampling parameters apply to PerpData
(``bar2edge``/``adjbartime``/``rightedge``/``boundoff`` are about close-stamped bars).
"""

from __future__ import annotations

import math
import backtrader as bt
from backtrader.dataseries import _Bar
from backtrader.resamplerfilter import Replayer, Resampler

from ..errors import DataError

#: backtrader's date number of 1970-01-01 (as in :mod:`btperp.bt.feed`).
_EPOCH = 719163.0
MARK = ("mark_open", "mark_high", "mark_low", "mark_close")
FUNDING = ("funding_rate", "funding_per_unit", "funding_open_per_unit", "funding_events", "funding_time")
EXTRAS = MARK + FUNDING
_NAN = math.nan
_NO_ROW = (_NAN,) * 7 + (0.0, _NAN)     # a source bar the attached table does not have


def period(num: float, timeframe: int, compression: int) -> tuple[int, float]:
    """(period key, period open time) of the bar opening at ``num`` (a backtrader date number)."""
    tf = timeframe
    if tf in (bt.TimeFrame.Minutes, bt.TimeFrame.Seconds):
        unit = 1440 if tf == bt.TimeFrame.Minutes else 86_400
        # bins aligned to UTC midnight, as pandas' origin="epoch" in btperp.resample
        k = math.floor(round((num - _EPOCH) * unit, 6)) // compression
        return k, _EPOCH + k * compression / unit
    day = math.floor(round(num - _EPOCH, 9))
    if tf == bt.TimeFrame.Days:
        k = day // compression
        return k, _EPOCH + k * compression
    if tf == bt.TimeFrame.Weeks:            # 1970-01-01 was a Thursday: weeks from Monday
        k = (day + 3) // (7 * compression)
        return k, _EPOCH + k * 7 * compression - 3
    when = bt.num2date(num)
    if tf == bt.TimeFrame.Months:
        k = (when.year * 12 + when.month - 1) // compression
        year, month = divmod(k * compression, 12)
        return k, bt.date2num(when.replace(year=year, month=month + 1, day=1, hour=0, minute=0,
                                           second=0, microsecond=0))
    if tf == bt.TimeFrame.Years:
        k = when.year // compression
        return k, bt.date2num(when.replace(year=k * compression, month=1, day=1, hour=0, minute=0,
                                           second=0, microsecond=0))
    raise DataError(f"cannot resample btperp bars to {bt.TimeFrame.getname(tf, compression)}: use "
                    f"seconds, minutes, days, weeks, months or years")


class _Extras:
    """Mark and funding of a bar being built from source bars (see the module doc)."""

    __slots__ = ("n", "mark_open", "mark_high", "mark_low", "mark_close", "funding_rate",
                 "funding_per_unit", "funding_open_per_unit", "funding_events", "funding_time")

    def __init__(self):
        self.reset()

    def reset(self):
        self.n = 0
        self.mark_open = self.mark_close = self.funding_rate = self.funding_per_unit = _NAN
        self.funding_open_per_unit = self.funding_time = _NAN
        self.mark_high, self.mark_low = -math.inf, math.inf
        self.funding_events = 0.0

    def update(self, v, opens_period: bool = True) -> None:
        """Add one source bar's values ``v`` (a mapping or sequence in :data:`EXTRAS` order)."""
        mo, mh, ml, mc, rate, fpu, fopen, events, ftime = v
        if self.n == 0:
            self.funding_open_per_unit = fopen if opens_period else _NAN
        self.n += 1
        if mo == mo and self.mark_open != self.mark_open:
            self.mark_open = mo
        if mh == mh and mh > self.mark_high:
            self.mark_high = mh
        if ml == ml and ml < self.mark_low:
            self.mark_low = ml
        if mc == mc:
            self.mark_close = mc
        if rate == rate:
            self.funding_rate = rate if self.funding_rate != self.funding_rate else self.funding_rate + rate
        if fpu == fpu:
            self.funding_per_unit = fpu if self.funding_per_unit != self.funding_per_unit else self.funding_per_unit + fpu
        if events == events:
            self.funding_events += events
        if ftime == ftime and not ftime <= self.funding_time:
            self.funding_time = ftime

    def values(self) -> tuple:
        high = self.mark_high if self.mark_high != -math.inf else _NAN
        low = self.mark_low if self.mark_low != math.inf else _NAN
        return (self.mark_open, high, low, self.mark_close, self.funding_rate, self.funding_per_unit,
                self.funding_open_per_unit, self.funding_events, self.funding_time)


class _OpenStamped:
    """Shared by the PerpData resampler and replayer: one bar per period of the source open times."""

    def _setup_perp(self, data):
        self._aliases = data.getlinealiases()
        self._extra_idx = [self._aliases.index(n) for n in EXTRAS]
        self._key = None
        self._agg_open = _NAN
        self._extras = _Extras()

    def _start_bar(self, data, key, start):
        self._key, self._start = key, start
        self._o, self._h, self._l, self._c = data.open[0], data.high[0], data.low[0], data.close[0]
        self._v, self._oi = data.volume[0], data.openinterest[0]
        self._extras.reset()
        self._extras.update([getattr(data.lines, n)[0] for n in EXTRAS],
                            opens_period=abs(data.datetime[0] - start) < 1e-9)

    def _add(self, data):
        self._h = max(self._h, data.high[0])
        self._l = min(self._l, data.low[0])
        self._c = data.close[0]
        self._v += data.volume[0]
        self._oi = data.openinterest[0]
        self._extras.update([getattr(data.lines, n)[0] for n in EXTRAS])

    def _values(self, when: float) -> list:
        base = {"open": self._o, "high": self._h, "low": self._l, "close": self._c, "volume": self._v,
                "openinterest": self._oi, "datetime": when}
        base.update(zip(EXTRAS, self._extras.values()))
        return [base[name] for name in self._aliases]


class PerpResampler(_OpenStamped, Resampler):
    """``resampledata`` for open-stamped btperp bars (see the module doc)."""

    def __init__(self, data):
        super().__init__(data)
        self._setup_perp(data)

    def __call__(self, data, fromcheck=False, forcedata=None):
        if fromcheck:                       # live feeds only: btperp's feeds are historical
            return False
        key, start = period(data.datetime[0], self.p.timeframe, self.p.compression)
        if self._key is not None and key != self._key:
            data._add2stack(self._values(self._start))     # the previous period is complete
            self._key = None
        if self._key is None:
            self._start_bar(data, key, start)
        else:
            self._add(data)
        data.backwards()                    # the source bar is consumed
        return True

    def last(self, data):
        if self._key is None:
            return False
        data._add2stack(self._values(self._start))
        self._key = None
        return True

    def check(self, data, _forcedata=None):
        return None


class PerpReplayer(_OpenStamped, Replayer):
    """``replaydata`` for open-stamped btperp bars (see the module doc)."""

    def __init__(self, data):
        super().__init__(data)
        self._setup_perp(data)

    def __call__(self, data, fromcheck=False, forcedata=None):
        if fromcheck:
            return False
        data._tick_fill(force=True)         # the source bar itself, for the broker
        when = data.datetime[0]
        key, start = period(when, self.p.timeframe, self.p.compression)
        if key == self._key:
            self._add(data)
            data.backwards(force=True)      # update the bar being built instead of adding one
        else:
            self._start_bar(data, key, start)
        data._updatebar(self._values(when), forward=False, ago=0)
        return False

    def last(self, data):
        return False

    def check(self, data, _forcedata=None):
        return None


# --- plain feeds with attach() ----------------------------------------------------------------

class ResampledMarket:
    """The mark and funding of each bar backtrader's resampler delivered for an attached feed,
    with :class:`~btperp.bt.feed.MarketTable`'s reading interface (``row``, ``columns``)."""

    def __init__(self, raw):
        self.raw = raw
        self.frame = raw.frame
        self.symbol = raw.symbol
        self.exchange = raw.exchange
        self.reset()

    def reset(self):
        self.columns = {name: [] for name in EXTRAS}
        self._rows: dict[int, int] = {}

    def add(self, bt_datetime: float, values) -> None:
        key = int(round(bt_datetime * 86_400_000))
        if key in self._rows:               # a bar delivered again (backtrader's last() after a stop)
            i = self._rows[key]
            for name, v in zip(EXTRAS, values):
                self.columns[name][i] = v
            return
        self._rows[key] = len(self.columns["mark_open"])
        for name, v in zip(EXTRAS, values):
            self.columns[name].append(v)

    def row(self, bt_datetime: float) -> int:
        return self._rows.get(int(round(bt_datetime * 86_400_000)), -1)

    def value(self, name: str, bt_datetime: float) -> float:
        i = self.row(bt_datetime)
        return float(self.columns[name][i]) if i >= 0 else math.nan


class _MarketBar(_Bar):
    """backtrader's bar holder that also aggregates the attached table's rows of the source bars
    it is built from, and records them under the time of the bar it delivers."""

    def __init__(self, market: ResampledMarket, maxdate=False):
        self._market = market
        self._extras = _Extras()
        super().__init__(maxdate=maxdate)

    def bstart(self, maxdate=False):
        super().bstart(maxdate=maxdate)
        extras = self.__dict__.get("_extras")
        if extras is not None:
            extras.reset()

    def bupdate(self, data, reopen=False):
        if reopen:
            self._extras.reset()
        table = self._market.raw
        i = table.row(data.datetime[0])
        cols = table.columns
        self._extras.update([cols[n][i] for n in EXTRAS] if i >= 0 else _NO_ROW)
        return super().bupdate(data, reopen=reopen)

    def lvalues(self):
        values = super().lvalues()
        self._market.add(self.datetime, self._extras.values())
        return values


def market_resampler(data) -> None:
    """Make the backtrader resampler of an attached plain feed record mark and funding per bar
    (called by :func:`attach`, before or after ``cerebro.resampledata``)."""
    table = getattr(data, "btperp_market", None)
    if table is None:
        return
    for flt, _, _ in data._filters:
        if isinstance(flt, Resampler) and not isinstance(flt, PerpResampler) \
                and not isinstance(flt.bar, _MarketBar):
            raw = getattr(table, "raw", table)
            market = ResampledMarket(raw)
            flt.bar = _MarketBar(market, maxdate=True)
            data.btperp_market = market


def _resample_attached(data, **kwargs):
    data.addfilter(Resampler, **kwargs)
    market_resampler(data)


def hook_resample(data) -> None:
    """After :func:`attach`: a later ``cerebro.resampledata(data)`` records mark and funding too."""
    data.resample = lambda **kwargs: _resample_attached(data, **kwargs)


__all__ = ["PerpResampler", "PerpReplayer", "ResampledMarket", "market_resampler", "hook_resample",
           "period"]
