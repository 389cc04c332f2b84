"""backtrader feeds that carry mark prices and funding beside the traded price.

* :class:`PerpData`: a feed built from a :func:`btperp.load` frame, with the extra lines
  ``mark_open mark_high mark_low mark_close funding_rate funding_per_unit funding_open_per_unit funding_events
  funding_time`` and a bulk preload (whole numpy columns copied into the line buffers; backtrader's
  ``PandasData`` reads cell by cell, about 80 µs a bar).
* :func:`attach`: for a feed the user already has (a CSV feed, say): mark prices and funding are
  looked up by bar time from a btperp frame, so the script keeps building its own feeds.
"""

from __future__ import annotations

import array
import math
import os
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from ..errors import DataError
from ..io.loader import MARK_COLUMNS, load, load_detail
from ..io.market import parse_timeframe, timeframe_name

#: backtrader's date number of 1970-01-01 (days since 0001-01-01, plus one).
BT_EPOCH = 719163.0
EXTRA_LINES = MARK_COLUMNS + ("funding_rate", "funding_per_unit", "funding_open_per_unit",
                              "funding_events", "funding_time")


def bt_timeframe(timeframe: str) -> tuple[int, int]:
    """``1h`` → (TimeFrame.Minutes, 60), ``1d`` → (TimeFrame.Days, 1): backtrader's convention."""
    step = parse_timeframe(timeframe)
    minutes = int(step.total_seconds() // 60)
    if minutes % (7 * 1440) == 0:
        return bt.TimeFrame.Weeks, minutes // (7 * 1440)
    if minutes % 1440 == 0:
        return bt.TimeFrame.Days, minutes // 1440
    return bt.TimeFrame.Minutes, minutes


def timeframe_of(data: bt.AbstractDataBase, source: bool = False) -> str:
    """A feed's timeframe in ccxt spelling (``1h``), from its backtrader timeframe/compression;
    ``source=True``: the timeframe of the bars it reads (before any resampling or replay)."""
    tf, comp = (data.p.timeframe, data.p.compression) if source else (data._timeframe, data._compression)
    minutes = {bt.TimeFrame.Minutes: 1, bt.TimeFrame.Days: 1440, bt.TimeFrame.Weeks: 10080}.get(tf)
    if minutes is None:
        raise DataError(f"feed {data._name or data!r}: timeframe {bt.TimeFrame.getname(tf)} "
                        f"is not supported; use minutes, days or weeks")
    return timeframe_name(pd.Timedelta(minutes=minutes * comp))


def to_bt_num(times: pd.DatetimeIndex | pd.Series) -> np.ndarray:
    """UTC times → backtrader date numbers (NaT → NaN), vectorized ``bt.date2num``."""
    t = pd.DatetimeIndex(times)
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    ns = t.as_unit("ns").asi8.astype(np.float64)
    out = ns / 86_400e9 + BT_EPOCH
    out[np.asarray(t.isna())] = np.nan
    return out


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The frame as float64 columns, one per PerpData line (datetime as date numbers)."""
    cols = {"datetime": to_bt_num(frame.index)}
    for name in ("open", "high", "low", "close", "volume") + MARK_COLUMNS + (
            "funding_rate", "funding_per_unit", "funding_open_per_unit", "funding_events"):
        cols[name] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    cols["funding_time"] = to_bt_num(frame["funding_time"])
    cols["openinterest"] = np.full(len(frame), np.nan)
    return cols


class PerpData(bt.feed.DataBase):
    """A perpetual-futures feed: last price, mark price and funding, bar by bar.

    ``dataname`` is a :func:`btperp.load` frame. ``self.data.mark_low[0]`` is the bar's mark low,
    ``funding_per_unit[0]`` what one unit held long pays over the bar's funding events (NaN if none).
    Set ``timeframe``/``compression`` (``load_feed`` does it from the frame).
    """

    lines = EXTRA_LINES
    params = (("symbol", None), ("exchange", None))

    def start(self):
        super().start()
        frame = self.p.dataname
        if not isinstance(frame, pd.DataFrame):
            raise DataError("PerpData needs a DataFrame from btperp.load()")
        times = frame.index
        keep = np.ones(len(frame), bool)
        if self.p.fromdate is not None:
            keep &= to_bt_num(times) >= bt.date2num(self.p.fromdate)
        if self.p.todate is not None:
            keep &= to_bt_num(times) <= bt.date2num(self.p.todate)
        self._cols = frame_columns(frame.loc[keep])
        self._row = 0

    def _bulk_ok(self) -> bool:
        """Bulk copy is equivalent to backtrader's loop only without filters, tz input or qbuffers."""
        return (not self._filters and not self._ffilters and self._tzinput is None
                and not self._barstack and not self._barstash
                and all(line.mode == line.UnBounded for line in self.lines))

    def preload(self):
        if not self._bulk_ok():
            return super().preload()
        for name, values in self._cols.items():
            line = getattr(self.lines, name)
            buf = array.array("d")
            buf.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
            line.array = buf
        self._row = len(self._cols["datetime"])
        self._last()
        self.home()

    def resample(self, **kwargs):
        """``cerebro.resampledata``: mark and funding lines aggregated too (:mod:`btperp.bt.resample`)."""
        from .resample import PerpResampler
        self.addfilter(PerpResampler, **kwargs)

    def replay(self, **kwargs):
        """``cerebro.replaydata``: mark and funding lines aggregated too (:mod:`btperp.bt.resample`)."""
        from .resample import PerpReplayer
        self.addfilter(PerpReplayer, **kwargs)

    def _load(self):
        i = self._row
        if i >= len(self._cols["datetime"]):
            return False
        for name, values in self._cols.items():
            getattr(self.lines, name)[0] = float(values[i])     # a Python float, as backtrader's feeds
        self._row = i + 1
        return True


def load_feed(symbol: str, exchange: str = "binance-usdm", timeframe: str = "1h", start: Any = None,
              end: Any = None, *, datadir: "str | os.PathLike[str] | None" = None,
              detail: "str | pd.DataFrame | None" = None, **kwargs) -> PerpData:
    """:func:`btperp.load` as a :class:`PerpData` feed with the right timeframe and compression.

    ``detail="1m"`` (or a :func:`btperp.io.loader.load_detail` frame) attaches finer bars the broker
    replays each bar on where something can happen in it (:func:`attach_detail`).
    """
    frame = load(symbol, exchange, timeframe, start, end, datadir=datadir)
    data = feed_from_frame(frame, **kwargs)
    if detail is not None:
        attach_detail(data, detail, datadir=datadir)
    return data


class Detail:
    """Finer bars (mark and/or last prices) inside a feed's bars, by bar (made by :func:`attach_detail`).

    :meth:`bars` gives the rows of one coarse bar's detail bars, or None when the detail does not
    cover that bar whole (the broker then uses the bar itself and keeps its time in ``missing``).
    """

    def __init__(self, frame: pd.DataFrame, coarse: str):
        self.frame = frame
        self.timeframe = frame.attrs.get("timeframe") or "1m"
        step = parse_timeframe(self.timeframe)
        bar = parse_timeframe(coarse)
        if bar % step != pd.Timedelta(0) or bar <= step:
            raise DataError(f"detail bars of {self.timeframe} do not divide the feed's {coarse} bars")
        self.per_bar = int(bar / step)
        self._bar_ms = int(bar / pd.Timedelta(milliseconds=1))
        self.times = to_bt_num(frame.index)
        self.ms = np.round(self.times * 86_400_000).astype(np.int64)      # as MarketTable keys them
        self.mark = self._series(frame, "mark_") if frame.attrs.get("mark", "mark_close" in frame) else None
        self.last = self._series(frame, "") if frame.attrs.get("last", "close" in frame) else None
        self.missing: set[float] = set()    # bars the broker needed detail for and had none

    @staticmethod
    def _series(frame: pd.DataFrame, prefix: str):
        return tuple(frame[prefix + c].to_numpy(dtype=np.float64, na_value=np.nan)
                     for c in ("open", "high", "low", "close"))

    def bars(self, bt_datetime: float) -> tuple[int, int] | None:
        """Rows ``[i0, i1)`` of the detail bars inside the coarse bar opening at ``bt_datetime``."""
        key = int(round(bt_datetime * 86_400_000))
        i0 = int(np.searchsorted(self.ms, key))
        i1 = int(np.searchsorted(self.ms, key + self._bar_ms))
        if i1 - i0 != self.per_bar:
            return None
        return i0, i1


def attach_detail(data: bt.AbstractDataBase, detail: "str | pd.DataFrame", *,
                  datadir: "str | os.PathLike[str] | None" = None) -> bt.AbstractDataBase:
    """Attach finer bars to ``data`` (a PerpData, or a feed with :func:`attach`); returns it.

    ``detail`` is a timeframe (``"1m"``: the stored mark/last detail of the feed's symbol, see
    :func:`btperp.io.loader.load_detail`) or a frame. The strategy still sees the feed's bars; the
    broker walks the detail bars inside a bar only where a liquidation price, a margin-call price or
    an order's trigger lies inside the bar's range, so liquidations (mark detail) and fills
    (last-price detail) happen at the right minute and price.
    """
    if isinstance(detail, str):
        frame = getattr(data.p, "dataname", None) if isinstance(data, PerpData) else None
        market = getattr(data, "btperp_market", None)
        frame = frame if isinstance(frame, pd.DataFrame) else (market.frame if market is not None else None)
        if frame is None:
            raise DataError("attach_detail() with a timeframe needs a PerpData feed or one with "
                            "btperp.attach(); pass a load_detail() frame instead")
        a = frame.attrs
        end = frame.index[-1] + parse_timeframe(a["timeframe"]) - pd.Timedelta(milliseconds=1)
        detail = load_detail(a["symbol"], a["exchange"], detail, frame.index[0], end, datadir=datadir)
    if not isinstance(detail, pd.DataFrame):
        raise DataError(f"detail must be a timeframe such as '1m' or a frame, got {type(detail).__name__}")
    data.btperp_detail = Detail(detail, timeframe_of(data))
    return data


def feed_from_frame(frame: pd.DataFrame, **kwargs) -> PerpData:
    """A :class:`PerpData` over a loaded (or resampled) frame."""
    tf, compression = bt_timeframe(frame.attrs["timeframe"])
    kwargs.setdefault("name", frame.attrs.get("symbol"))
    return PerpData(dataname=frame, timeframe=tf, compression=compression,
                    symbol=frame.attrs.get("symbol"), exchange=frame.attrs.get("exchange"), **kwargs)


class MarketTable:
    """Mark prices and funding of an ordinary feed, looked up by the feed's bar time.

    Made by :func:`attach`; the broker reads it through :meth:`row` (an index into the columns,
    or -1 when the table has no bar at that time).
    """

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.symbol = frame.attrs.get("symbol")
        self.exchange = frame.attrs.get("exchange")
        self.columns = frame_columns(frame)
        self._keys = np.round(self.columns["datetime"] * 86_400_000).astype(np.int64)   # ms
        self._cursor = 0

    def row(self, bt_datetime: float) -> int:
        """Row of the bar opening at ``bt_datetime`` (a backtrader date number), or -1."""
        key = int(round(bt_datetime * 86_400_000))
        keys, i = self._keys, self._cursor
        if not (i < len(keys) and keys[i] == key):          # bars arrive in order: try the cursor first
            i = int(np.searchsorted(keys, key))
            if i >= len(keys) or keys[i] != key:
                return -1
        self._cursor = i + 1 if i + 1 < len(keys) else i
        return i

    def value(self, name: str, bt_datetime: float) -> float:
        i = self.row(bt_datetime)
        return float(self.columns[name][i]) if i >= 0 else math.nan


def attach(data: bt.AbstractDataBase, symbol: str | None = None, exchange: str = "binance-usdm", *,
           frame: pd.DataFrame | None = None, bar_time: str = "open",
           datadir: "str | os.PathLike[str] | None" = None) -> bt.AbstractDataBase:
    """Attach mark prices and funding to an existing backtrader feed; returns the same feed.

    ``symbol`` (or a ready ``frame`` from :func:`btperp.load`) says what to attach; the frame is
    loaded at the timeframe of the feed's source bars (``resampledata``/``replaydata`` before or
    after ``attach`` aggregate it bar by bar: :mod:`btperp.bt.resample`). backtrader stamps a bar with its *close* time in most CSV
    feeds, btperp with its open time: ``bar_time="close"`` shifts the lookup by one bar.
    The feed must carry UTC times.
    """
    if bar_time not in ("open", "close"):
        raise DataError(f"bar_time must be 'open' or 'close', got {bar_time!r}")
    if frame is None:
        if symbol is None:
            raise DataError("attach() needs a symbol or a frame")
        frame = load(symbol, exchange, timeframe_of(data, source=True), datadir=datadir)
    if bar_time == "close":
        frame = frame.copy()
        frame.index = frame.index + parse_timeframe(frame.attrs["timeframe"])
    data.btperp_market = MarketTable(frame)
    from .resample import hook_resample, market_resampler
    market_resampler(data)          # cerebro.resampledata(data) already called
    hook_resample(data)             # or called later
    return data
