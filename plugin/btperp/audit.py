"""Liquidation audits: would the exchange's rules have liquidated this position, when, and at what price?

The Python API behind ``btperp audit``::

    from btperp.audit import audit_position, audit_positions, audit_history
    a = audit_position("ETHUSDT", "long", "2021-05-18 00:00", 3283.23, margin=1000, leverage=3,
                       end="2021-05-21")
    a.liquidated, a.liquidation_time, a.liquidation_price, a.funding_paid

    # a real liquidation, checked against the rules
    a = audit_position(..., reported_time="2021-05-19 12:31", reported_price=2190.5)
    a.verdict          # "consistent", "earlier" or "later" (than the rules imply)

    # many positions at once (a DataFrame of entries in, one row per position out)
    table = audit_positions(entries, symbol="BTCUSDT")

    # every liquidation of a backtest's margin history explained (and a PNG each)
    audits = btperp.report.audit_history("out/run", plots="out/run/audit")   # with the PNGs

Positions are replayed by :func:`btperp.replay.replay` (numpy over the price arrays, the core's
formulas), not by a backtrader run; ``tests/test_audit.py`` checks that the two agree.

Partial liquidation (``liquidation="partial"``, the default as in the broker): the liquidation
fields (time, prices, tier, the verdict) describe the *first* liquidation event, when the rules
first liquidate the position at least in part; ``events`` lists every event, each partial step and
the close, as :func:`btperp.replay.liquidation_events` (the broker's own
:func:`btperp.liquidation.partial_step`) gives them, and ``closed_time`` when a liquidation closed
what was left.

Coin-margined (inverse) contracts (``exchange="binance-coinm"`` or ``"bybit-inverse"``, sized in
``contracts`` of ``contract_size`` USD, margin in the coin): the position is replayed as its mirror
(:mod:`btperp.inverse`: prices 1/P with high and low swapped, the opposite side, size contracts ×
contract size) by the same :func:`btperp.replay.replay`, and the audit reports prices back in USD,
sizes in contracts and amounts in the coin.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .errors import DataError, InputError, LeverageError
from .io.market import inclusive_end, list_series, parse_timeframe, timeframe_name
from .liquidation import LiquidationMode, partial_rule, partial_step
from .margin import MarginMode, Position, Side, solve_price_array
from .replay import Epoch, Market, Positions, liquidation_events, liquidation_path, replay
from .rules import Rulebook, get_rulebook
from .symbols import to_inverse, to_unified
from .tiers import TierHistory, TierTable
from .times import to_ms as _ms, utc_minute as _iso

TRIGGERS = ("mark", "last")
VERDICTS = {
    "consistent": "consistent within a bar",
    "earlier": "earlier than the rules imply",
    "later": "later than the rules imply",
    "undetermined": "undetermined: the data ends before the reported time",
}


# --- market data ---------------------------------------------------------------------------------

def tier_history(exchange: str, symbol: str, datadir: "str | os.PathLike[str] | None" = None) -> TierHistory:
    """The bundled (or imported) tier history of ``symbol`` on ``exchange``."""
    from .io.tierfile import TierHistoryFile
    rulebook = get_rulebook(exchange, inverse=True)
    found = TierHistoryFile.bundled(rulebook.name, datadir)
    history = found.history(symbol, rulebook.settle) if found is not None else None
    if history is None:
        raise InputError(f"no tier table for {symbol} on {rulebook.name}; import its history with "
                         f"`btperp data import-tiers` (or pass tiers=)", field="symbol")
    return history


def market_of(frame: pd.DataFrame, tiers: "TierHistory | TierTable", *, symbol: str = "") -> Market:
    """A :class:`~btperp.replay.Market` from a :func:`btperp.load` frame and the symbol's tiers."""
    if isinstance(tiers, TierTable):
        tiers = TierHistory.constant(tiers)
    need = ["open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"{symbol}: the frame lacks {', '.join(missing)} (use btperp.load)")
    times = frame.index.as_unit("ms").asi8
    n = len(times)
    bounds = [int(np.searchsorted(times, _ms(t), side="left")) for t in tiers.change_times()]
    epochs = []
    if bounds[0] > 0:                    # bars before the first known table: the earliest, assumed
        epochs.append(Epoch(0, min(bounds[0], n), tiers.versions[0][1], assumed=True))
    for k, (_, table) in enumerate(tiers.versions):
        lo = bounds[k]
        hi = bounds[k + 1] if k + 1 < len(bounds) else n
        lo, hi = min(lo, n), min(hi, n)
        if hi > lo:
            epochs.append(Epoch(lo, hi, table))
    timeframe = frame.attrs.get("timeframe")
    step = (parse_timeframe(timeframe) if timeframe else
            pd.Timedelta(int(np.median(np.diff(times))) if n > 1 else 3_600_000, unit="ms"))
    zeros = np.zeros(n)
    return Market(times, mark=[frame[c].to_numpy(float) for c in need[4:]],
                  last=[frame[c].to_numpy(float) for c in need[:4]],
                  funding_per_unit=frame["funding_per_unit"].to_numpy(float)
                  if "funding_per_unit" in frame else zeros,
                  funding_open_per_unit=frame["funding_open_per_unit"].to_numpy(float)
                  if "funding_open_per_unit" in frame else zeros,
                  epochs=epochs, step_ms=int(step / pd.Timedelta(milliseconds=1)),
                  symbol=symbol or frame.attrs.get("symbol", ""))


def _finest(exchange: str, symbol: str, datadir) -> str:
    """The finest timeframe stored for both last and mark prices (detail alone does not count)."""
    series = list_series(exchange, to_unified(symbol), datadir)
    stored = sorted(set(series["mark"]) & set(series["ohlcv"]), key=parse_timeframe)
    return stored[0] if stored else "1h"


def _market(symbol: str, rulebook: Rulebook, timeframe: str | None, start: Any, end: Any, datadir,
            frame: pd.DataFrame | None = None, tiers: "TierHistory | TierTable | None" = None):
    """The market to replay (the given frame, or the datasets' bars from ``start`` to ``end``) and
    the tier history used."""
    if frame is None:
        from .io.loader import load
        tf = timeframe or _finest(rulebook.name, symbol, datadir)
        frame = load(symbol, rulebook.name, tf, start=start, end=inclusive_end(end), datadir=datadir)
    elif end is not None:
        frame = frame.loc[:inclusive_end(end)]
    if tiers is None:
        tiers = tier_history(rulebook.name, symbol, datadir)
    return market_of(frame, tiers, symbol=to_unified(symbol)), tiers


# --- one position ----------------------------------------------------------------------------------

@dataclass
class PositionAudit:
    """What the rules did to one position (amounts in USDT, times ISO UTC bar open times;
    coin-margined: amounts in the coin ``settle``, prices in USD, ``size`` in contracts of
    ``contract_size`` USD)."""

    exchange: str
    symbol: str
    side: str
    margin_mode: str
    trigger: str
    timeframe: str
    entry_time: str
    entry_price: float
    size: float
    margin: float
    """Isolated margin (or, in cross margin, the wallet balance backing the position)."""
    leverage: float
    data_end: str
    """Open time of the last bar replayed."""
    tier_table: str
    """Date the tier table in force at entry was observed (``assumed`` if the entry predates it)."""
    entry_liquidation_price: float | None
    entry_bankruptcy_price: float | None
    liquidated: bool
    liquidation_time: str | None
    liquidation_price: float | None
    trigger_price: float | None
    bankruptcy_price: float | None
    gap: bool
    tier: int | None
    maintenance_rate: float | None
    maintenance_margin: float | None
    equity: float | None
    funding_paid: float
    bars_held: int
    bar: dict | None
    """Mark and last OHLC of the liquidation bar."""
    other_trigger: dict
    """The same replay with the other price series triggering (``last`` for a mark audit)."""
    reported_time: str | None = None
    reported_price: float | None = None
    verdict: str | None = None
    """``consistent``, ``earlier``, ``later`` or ``undetermined``; None without a report."""
    verdict_text: str | None = None
    evidence: list[str] = field(default_factory=list)
    closest: dict | None = None
    """Where the trigger price came closest to the liquidation price before the report (or the end)."""
    notes: list[str] = field(default_factory=list)
    detail: str | None = None
    """Timeframe of the detail bars the liquidation bar was replayed on (its minute named), if any."""
    liquidation: str = "full"
    """``partial`` (the exchange's partial liquidation rule, module docstring) or ``full``."""
    events: list[dict] = field(default_factory=list)
    """Every liquidation event: the partial steps (``partial``: size closed at the trigger price,
    ``remaining``, the remainder's ``margin_ratio``), then the close; times are bar open times."""
    closed_time: str | None = None
    """When a liquidation closed the position (None: it, or its remainder, survived the data)."""
    settle: str = "USDT"
    """The currency amounts are in (coin-margined: the coin)."""
    contract_size: float | None = None
    """Coin-margined: USD per contract (``size`` is then in contracts); None: linear."""
    _market: Market | None = field(default=None, repr=False, compare=False)
    """The replayed market and the (entry, last held) bars: what :func:`plot_position` draws."""
    _bars: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)
    _detail: "pd.DataFrame | None" = field(default=None, repr=False, compare=False)
    """The trigger series' detail bars of the liquidation bar, when it was replayed on them."""

    def to_dict(self) -> dict:
        return _jsonable({f.name: getattr(self, f.name) for f in fields(self)
                          if not f.name.startswith("_")})


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def resolve_size(rulebook: Rulebook, side: int, entry_price, *, size=None, margin=None, leverage=None,
                 taker_fee: float, margin_mode: MarginMode = MarginMode.ISOLATED):
    """(size, margin, leverage) from any two of them (arrays or scalars). Margin from size and
    leverage is the initial margin; size from margin and leverage fills that initial margin."""
    given = {k for k, v in (("size", size), ("margin", margin), ("leverage", leverage)) if v is not None}
    if given == {"size", "leverage"}:
        if margin_mode is MarginMode.CROSS:
            raise InputError("cross margin: give the margin (the wallet balance backing the position)",
                             field="margin")
        margin = rulebook.initial_margin(side, size, entry_price, leverage, taker_fee)
    elif given == {"margin", "leverage"}:
        # initial margin is linear in the size: the margin of one unit scales it
        size = np.asarray(margin, dtype=float) / rulebook.initial_margin(side, 1.0, entry_price, leverage,
                                                                         taker_fee)
    elif given == {"size", "margin"}:
        leverage = np.asarray(size, dtype=float) * entry_price / margin
    elif given != {"size", "margin", "leverage"}:
        raise InputError("give the size and the leverage, the margin and the leverage, or the size "
                         "and the margin", field="size" if "size" not in given else "leverage")
    return size, margin, leverage


def _check_leverage(table: TierTable, notional, leverage, where: str) -> None:
    notional = np.atleast_1d(np.asarray(notional, dtype=float))
    leverage = np.broadcast_to(np.asarray(leverage, dtype=float), notional.shape)
    for lev in np.unique(leverage):
        cap = table.max_notional_for(float(lev))
        bad = np.flatnonzero((leverage == lev) & (notional > cap * (1 + 1e-9)))
        if len(bad):
            raise LeverageError(f"{where}: a notional of {notional[bad[0]]:,.2f} at {lev:g}x is above "
                                f"the {cap:,.0f} the tier table allows at that leverage"
                                + (f" ({len(bad)} positions, first at row {bad[0]})" if len(notional) > 1
                                   else ""), field="leverage")


def audit_position(symbol: str, side, entry_time: Any, entry_price: float | None = None, *,
                   size: float | None = None, margin: float | None = None,
                   leverage: float | None = None, exchange: str = "binance-usdm",
                   margin_mode: str = "isolated", end: Any = None, timeframe: str | None = None,
                   trigger: str = "mark", reported_time: Any = None,
                   reported_price: float | None = None, datadir=None, frame: pd.DataFrame | None = None,
                   tiers: "TierHistory | TierTable | None" = None,
                   taker_fee: float | None = None,
                   detail: "str | pd.DataFrame | None" = None, liquidation: str = "partial",
                   liquidation_fee: float | None = None, contracts: float | None = None,
                   contract_size: float | None = None, _mirrored: bool = False,
                   _lot_size: float | None = None) -> PositionAudit:
    """Replay one position from ``entry_time`` (bar open time, UTC) until it is liquidated or the
    data (or ``end``) ends; given what the exchange reported, judge it (module docstring).

    ``frame`` (a :func:`btperp.load` frame) and ``tiers`` replace the bundled data; the entry
    price defaults to the last-price open of the entry bar. ``detail`` (``"1m"`` or a
    :func:`btperp.io.loader.load_detail` frame): the liquidation bar is replayed on those finer bars,
    so the liquidation (and the report) are judged to the minute. ``liquidation``: ``partial``
    (default) lists the exchange's partial steps in ``events`` (module docstring), with the
    liquidation fee ``liquidation_fee`` (default the exchange's); ``full``: one close.
    Coin-margined exchanges take ``contracts`` (and ``contract_size``, default the dataset's, else
    the exchange's)
    instead of ``size``, and ``margin`` in the coin (module docstring).
    """
    rulebook = get_rulebook(exchange, inverse=True)
    if rulebook.inverse and not _mirrored:
        return _audit_inverse(rulebook, symbol, side, entry_time, entry_price, contracts=contracts,
                              contract_size=contract_size, size=size, margin=margin, leverage=leverage,
                              margin_mode=margin_mode, end=end, timeframe=timeframe, trigger=trigger,
                              reported_time=reported_time, reported_price=reported_price,
                              datadir=datadir, frame=frame, tiers=tiers, taker_fee=taker_fee,
                              detail=detail, liquidation=liquidation, liquidation_fee=liquidation_fee)
    if contracts is not None or contract_size is not None:
        raise InputError(f"{rulebook.name} is sized in base units (--size); contracts are for "
                         f"coin-margined exchanges (binance-coinm, bybit-inverse)",
                         field="contracts" if contracts is not None else "contract_size")
    px = _reciprocal if _mirrored else float        # a price as the user reads it (USD)
    mode = MarginMode.parse(margin_mode)
    how = LiquidationMode.parse(liquidation)
    sgn = int(Side.parse(side))
    if trigger not in TRIGGERS:
        raise InputError(f"trigger must be 'mark' or 'last', got {trigger!r}", field="trigger")
    fee = rulebook.taker_fee if taker_fee is None else float(taker_fee)
    entry_ms = _ms(entry_time, "entry_time")
    if end is not None:
        _ms(end, "end")
    if reported_time is not None:
        _ms(reported_time, "reported_time")
    if reported_price is not None and reported_time is None:
        raise InputError("a reported price needs the reported time (--reported-time): the verdict "
                         "compares the bar the rules liquidate in with the time of the report",
                         field="reported_price")
    if reported_price is not None and not (math.isfinite(reported_price) and reported_price > 0):
        raise InputError(f"must be a positive number, got {reported_price!r}", field="reported_price")
    for name, value in (("size", size), ("margin", margin), ("leverage", leverage)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"must be a positive number, got {value!r}", field=name)
    if end is not None and _ms(inclusive_end(end)) < entry_ms:
        raise InputError(f"the end {end} is before the entry time {_iso(entry_ms)}", field="end")
    if reported_time is not None and end is not None and _ms(reported_time) > _ms(inclusive_end(end)):
        raise InputError("the reported time is after --end; drop --end or move it past the report",
                         field="end")
    market, tiers = _market(symbol, rulebook, timeframe, entry_time, end, datadir, frame, tiers)
    i = int(market.index_of([entry_ms])[0])
    if i < 0 or entry_ms >= market.times[-1] + market.step_ms:
        raise InputError(f"entry time {_iso(entry_ms)} is outside the data ({_iso(market.times[0])} to "
                         f"{_iso(market.times[-1])})", field="entry_time")
    notes = []
    if entry_ms != market.times[i]:
        notes.append(f"the entry is inside the {_iso(market.times[i])} bar: that bar's extremes may "
                     f"predate it (the replay cannot see inside a bar)")
    if entry_price is None:
        entry_price = float(market.last[0][i])
    elif not entry_price > 0:
        raise InputError(f"must be a positive number, got {entry_price!r}", field="entry_price")
    lo, hi = market.last[2][i], market.last[1][i]
    if not lo * (1 - 1e-9) <= entry_price <= hi * (1 + 1e-9):
        lo, hi = sorted((px(lo), px(hi)))
        notes.append(f"the entry price {px(entry_price):,.2f} is outside the entry bar's traded range "
                     f"{lo:,.2f} to {hi:,.2f}")
    all_three = size is not None and margin is not None and leverage is not None
    size, margin, lev = resolve_size(rulebook, sgn, entry_price, size=size, margin=margin,
                                     leverage=leverage, taker_fee=fee, margin_mode=mode)
    size, margin, lev = float(size), float(margin), float(lev)
    if all_three and mode is MarginMode.ISOLATED:
        initial = float(rulebook.initial_margin(sgn, size, entry_price, lev, fee))
        if margin < initial * (1 - 1e-9):
            raise InputError(f"{margin:,.2f} is below the initial margin {initial:,.2f} that a size of "
                             f"{size:g} at {entry_price:,.2f} needs at {lev:g}x; give two of --size, "
                             f"--margin and --leverage, or a margin of at least {initial:,.2f}",
                             field="margin")
        if margin > initial * (1 + 1e-9):
            notes.append(f"size, margin and leverage all given: the margin {margin:,.2f} is above the "
                         f"initial margin {initial:,.2f} of {size:g} at {lev:g}x, so the difference "
                         f"({margin - initial:,.2f}) is taken as margin added to the isolated position "
                         f"(the exchange allows it); effective leverage "
                         f"{size * entry_price / margin:.3g}x. Give two of the three to have btperp "
                         f"derive the third")
    for name, value in (("size", size), ("margin", margin), ("leverage", lev)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"must be a positive number, got {value!r}", field=name)
    epoch = market.epochs[int(market.epoch_of[i])]
    if leverage is not None:
        _check_leverage(epoch.table, size * entry_price, lev, f"{to_unified(symbol)} at entry")
    observed = next(when for when, t in tiers.versions if t is epoch.table) if isinstance(
        tiers, TierHistory) else None
    table_note = (f"{observed:%Y-%m-%d}" if observed else "given") + (" (assumed)" if epoch.assumed else "")
    if epoch.assumed:
        notes.append(f"the entry predates the first known tier table ({observed:%Y-%m-%d}); that "
                     f"table was used")

    stop = len(market)
    positions = Positions.of(sgn, size, entry_price, margin, lev, i, stop, True)
    out = replay(market, rulebook, positions, trigger=trigger, taker_fee=fee)
    other_name = "last" if trigger == "mark" else "mark"
    other = replay(market, rulebook, positions, trigger=other_name, taker_fee=fee)
    lp0, _ = solve_price_array(rulebook, epoch.table, sgn, size, entry_price, lev, margin, fee)
    bp0 = _bankruptcy(rulebook, sgn, size, entry_price, margin, lev, fee)

    liquidated = bool(out.liquidated[0])
    t = int(out.bar[0])
    fine = None
    if isinstance(detail, str):
        from .io.loader import load_detail
        detail = load_detail(symbol, rulebook.name, detail, _iso(market.times[i]),
                             _iso(market.times[-1] + market.step_ms - 1), datadir=datadir)
    if liquidated and detail is not None:
        fine = _in_detail(market, rulebook, positions, out, t, detail, trigger, fee)
        if fine is None:
            notes.append(f"no {detail.attrs.get('timeframe', 'detail')} {trigger} detail covers the "
                         f"{_iso(market.times[t])} bar: liquidation named to the bar")
    bar = None
    if liquidated:
        bar = {"mark": _ohlc(market.mark, t), "last": _ohlc(market.last, t)}
    audit = PositionAudit(
        exchange=rulebook.name, symbol=to_unified(symbol), side=str(Side(sgn)), margin_mode=str(mode),
        trigger=trigger, timeframe=_timeframe(market), entry_time=_iso(entry_ms), entry_price=entry_price,
        size=size, margin=margin, leverage=lev, data_end=_iso(market.times[-1]), tier_table=table_note,
        entry_liquidation_price=_num(lp0), entry_bankruptcy_price=bp0,
        liquidated=liquidated,
        liquidation_time=(fine["time"] if fine else _iso(market.times[t])) if liquidated else None,
        liquidation_price=_num(out.liquidation_price[0]),
        trigger_price=fine["trigger_price"] if fine else _num(out.trigger_price[0]),
        bankruptcy_price=_num(out.bankruptcy_price[0]), gap=bool(out.gap[0]),
        tier=int(out.tier[0]) if liquidated else None, maintenance_rate=_num(out.maintenance_rate[0]),
        maintenance_margin=_num(out.maintenance_margin[0]), equity=_num(out.equity[0]),
        funding_paid=float(out.funding_paid[0]), bars_held=int(out.last_bar[0]) - i + 1, bar=bar,
        other_trigger={"trigger": other_name, "liquidated": bool(other.liquidated[0]),
                       "liquidation_time": _iso(market.times[other.bar[0]]) if other.liquidated[0] else None,
                       "liquidation_price": _num(other.liquidation_price[0])},
        notes=notes, detail=fine["timeframe"] if fine else None, liquidation=str(how), _market=market,
        _bars=(i, int(out.last_bar[0])),
        _detail=_detail_rows(detail, market, t, _ohlc_columns(trigger)) if fine else None)
    if liquidated:
        chain = liquidation_events(market, rulebook, sgn, size, entry_price, margin, lev, i, stop, True,
                                   trigger=trigger, taker_fee=fee, liquidation=how,
                                   fee_rate=liquidation_fee, lot_size=_lot_size)
        audit.events = [_event_dict(market, e) for e in chain.events]
        if fine is not None and audit.events:   # the first event, to the detail bar
            audit.events[0]["time"] = fine["time"]
        audit.closed_time = audit.events[-1]["time"] if chain.closed else None
        if len(chain.events) > 1 or audit.events[0]["partial"]:
            steps = sum(1 for e in chain.events if e.partial)
            notes.append(f"partial liquidation ({rulebook.partial_liquidation.document}): {steps} "
                         f"step{'s' if steps != 1 else ''}"
                         + (f", then closed in the {_iso(market.times[chain.last_bar])} bar"
                            if chain.closed else "; the rest survived the data"))
    if reported_time is not None:
        _judge(audit, market, rulebook, out, i, _ms(reported_time), reported_price, fee, fine, detail,
               px)
    return audit


def _reciprocal(x):
    """A mirror price back in USD per coin (and a USD price into the mirror)."""
    x = float(x)
    return math.inf if x == 0 else 1.0 / x


def _audit_inverse(rulebook: Rulebook, symbol: str, side, entry_time, entry_price, *, contracts,
                   contract_size, size, margin, leverage, frame, tiers, datadir, timeframe, end, detail,
                   reported_price, **rest) -> PositionAudit:
    """:func:`audit_position` of a coin-margined position: its mirror replayed, read back."""
    from .inverse import mirror_frame
    symbol = to_inverse(symbol)
    if size is not None:
        raise InputError("coin-margined positions are sized in contracts: give contracts (and "
                         "contract_size if not the exchange's), not size", field="size")
    if detail is not None:
        raise InputError("detail bars are not supported for coin-margined audits yet", field="detail")
    sgn = int(Side.parse(side))
    for name, value in (("contracts", contracts), ("contract_size", contract_size), ("margin", margin),
                        ("leverage", leverage), ("entry_price", entry_price)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not (math.isfinite(value) and value > 0)):
            raise InputError(f"must be a positive number, got {value!r}", field=name)
    given = [v is not None for v in (contracts, margin, leverage)]
    if sum(given) != 2:
        raise InputError("give two of contracts, margin (in the coin) and leverage",
                         field="contracts" if contracts is None else "leverage")
    if frame is None:
        from .io.loader import load
        tf = timeframe or _finest(rulebook.name, symbol, datadir)
        frame = load(symbol, rulebook.name, tf, start=entry_time, end=inclusive_end(end), datadir=datadir)
    if tiers is None:
        tiers = tier_history(rulebook.name, symbol, datadir)
    if contract_size is None:           # the dataset's (btperp fetch records it), else the exchange's
        contract_size = frame.attrs.get("contract_size") or rulebook.default_contract_size(symbol.split("/")[0])
    cs = float(contract_size)
    a = audit_position(symbol, Side(-sgn), entry_time,
                       None if entry_price is None else _reciprocal(entry_price),
                       size=None if contracts is None else contracts * cs, margin=margin, leverage=leverage,
                       exchange=rulebook, end=end, timeframe=timeframe, frame=mirror_frame(frame),
                       tiers=tiers, datadir=datadir, reported_price=reported_price, _mirrored=True,
                       _lot_size=cs, **rest)      # partial steps in whole contracts, as the broker's
    r = _reciprocal

    def opt(x):
        return None if x is None else _num(r(x))

    def bar(ohlc: dict) -> dict:
        return {"open": r(ohlc["open"]), "high": r(ohlc["low"]), "low": r(ohlc["high"]),
                "close": r(ohlc["close"])}

    a.symbol, a.side, a.settle, a.contract_size = symbol, str(Side(sgn)), symbol.rsplit(":", 1)[1], cs
    a.entry_price = float(entry_price) if entry_price is not None else r(a.entry_price)
    a.size = a.size / cs
    a.funding_paid += 0.0                       # no −0.0
    for name in ("entry_liquidation_price", "entry_bankruptcy_price", "liquidation_price",
                 "trigger_price", "bankruptcy_price"):
        setattr(a, name, opt(getattr(a, name)))
    if a.bar is not None:
        a.bar = {k: bar(v) for k, v in a.bar.items()}
    a.other_trigger = dict(a.other_trigger, liquidation_price=opt(a.other_trigger["liquidation_price"]))
    for e in a.events:
        e.update({k: opt(e[k]) for k in ("trigger_price", "fill_price", "liquidation_price",
                                         "bankruptcy_price")})
        e["size"], e["remaining"] = e["size"] / cs, e["remaining"] / cs
    return a


def _event_dict(market: Market, e) -> dict:
    """A :class:`btperp.replay.Event` as the audit lists it (time: its bar's open, UTC)."""
    return {"time": _iso(market.times[e.bar]), "partial": e.partial, "size": e.size,
            "remaining": e.remaining, "trigger_price": e.trigger_price, "fill_price": e.fill_price,
            "liquidation_price": _num(e.liquidation_price), "bankruptcy_price": _num(e.bankruptcy_price),
            "gap": e.gap, "tier": e.tier, "equity": e.equity, "maintenance_margin": e.maintenance_margin,
            "pnl": e.pnl, "fee": e.fee, "loss": e.loss, "insurance_flow": e.insurance_flow,
            "margin_ratio": _num(e.margin_ratio)}


def _detail_rows(detail: pd.DataFrame | None, market: Market, t: int, columns: list[str],
                 until_ms: int | None = None) -> pd.DataFrame | None:
    """The detail bars inside bar ``t`` (up to ``until_ms``) that have ``columns``, or None."""
    if detail is None or not set(columns) <= set(detail.columns):
        return None
    ms = detail.index.as_unit("ms").asi8
    keep = (ms >= market.times[t]) & (ms < market.times[t] + market.step_ms)
    if until_ms is not None:
        keep &= ms <= until_ms
    rows = detail.loc[keep, columns].dropna()
    return rows if len(rows) else None


def _ohlc_columns(trigger: str) -> list[str]:
    """The detail frame's open, high, low, close columns of the ``trigger`` series."""
    prefix = "mark_" if trigger == "mark" else ""
    return [prefix + c for c in ("open", "high", "low", "close")]


def _in_detail(market: Market, rulebook: Rulebook, positions: Positions, out, t: int,
               detail: pd.DataFrame, trigger: str, fee: float) -> dict | None:
    """Replay the liquidation bar ``t`` on its detail bars (btperp.intrabar's path through them,
    as the broker walks it): the same position, with the margin it had at the bar's start; the
    bar's funding at its open and later in it as on the bar. None when the detail does not cover it."""
    cols = _ohlc_columns(trigger)
    rows = _detail_rows(detail, market, t, cols)
    step = parse_timeframe(detail.attrs.get("timeframe", "1m")) / pd.Timedelta(milliseconds=1)
    if rows is None or len(rows) != round(market.step_ms / step):
        return None
    prices = [rows[c].to_numpy(float) for c in cols]
    m = len(rows)
    per_unit, at_open = np.zeros(m), np.zeros(m)
    per_unit[0] = market.f_after[t] - (market.f_after[t - 1] if t > 0 else 0.0)
    at_open[0] = market.f_open[t] - (market.f_after[t - 1] if t > 0 else 0.0)
    epoch = market.epochs[int(market.epoch_of[t])]
    fine = Market(rows.index.as_unit("ms").asi8, mark=prices, last=prices, funding_per_unit=per_unit,
                  funding_open_per_unit=at_open, epochs=[Epoch(0, m, epoch.table)], step_ms=int(step),
                  symbol=market.symbol)
    p = positions
    start = int(p.start[0])
    if t == start:                                  # entered in this bar (at its open)
        margin, opened = float(p.margin[0]), bool(p.opened[0])
    else:                                           # the margin it had when the bar opened
        before = replay(market, rulebook, Positions.of(p.side, p.size, p.entry_price, p.margin, p.leverage,
                                                        start, t, p.opened), trigger=trigger, taker_fee=fee)
        margin, opened = float(before.margin_left[0]), False
    got = replay(fine, rulebook, Positions.of(p.side, p.size, p.entry_price, margin, p.leverage, 0, m,
                                              opened), trigger=trigger, taker_fee=fee)
    if not got.liquidated[0]:
        return None
    j = int(got.bar[0])
    return {"time": _iso(fine.times[j]), "ms": int(fine.times[j]), "trigger_price": float(got.trigger_price[0]),
            "gap": bool(got.gap[0]), "timeframe": detail.attrs.get("timeframe", "1m"),
            "step_ms": int(step)}


def _bankruptcy(rulebook: Rulebook, side, size, entry, margin, leverage, fee):
    from .liquidation import bankruptcy_fill
    reserve = float(rulebook.bankruptcy_reserve(side, size, entry, leverage, fee))
    price = float(bankruptcy_fill(side, size, entry, margin, reserve))
    return price if price > 0 else None


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _ohlc(series, t: int) -> dict:
    return {k: float(a[t]) for k, a in zip(("open", "high", "low", "close"), series)}


def _timeframe(market: Market) -> str:
    return timeframe_name(pd.Timedelta(market.step_ms, unit="ms"))


def _judge(audit: PositionAudit, market: Market, rulebook: Rulebook, out, i: int, reported_ms: int,
           reported_price: float | None, fee: float, fine: dict | None = None,
           detail: pd.DataFrame | None = None, px=float) -> None:
    """The verdict on a reported liquidation, and its evidence. ``px``: a replayed price as the
    user reads it (a coin-margined mirror's: 1/x, its side the opposite one)."""
    usd = px is not float                       # the replay is of a mirror: words of the USD side
    audit.reported_time = _iso(reported_ms)
    audit.reported_price = reported_price
    if reported_ms < market.times[i]:
        raise InputError(f"the reported time {_iso(reported_ms)} is before the entry bar "
                         f"{_iso(market.times[i])}", field="reported_time")
    r = int(market.index_of([reported_ms])[0])
    beyond_data = reported_ms >= market.times[-1] + market.step_ms
    t = int(out.bar[0])
    evidence = []
    if out.liquidated[0]:
        evidence.append(f"the rules liquidate it in the {_iso(market.times[t])} bar at "
                        f"{px(out.trigger_price[0]):,.2f} (liquidation price {px(out.liquidation_price[0]):,.2f}, "
                        f"{audit.trigger} {'opened beyond it' if out.gap[0] else 'extreme ' + format(px(_extreme(market, audit, t)), ',.2f')})")
        verdict = "consistent" if r == t else ("earlier" if r < t else "later")
        if fine is not None and r == t:             # judged at the detail's resolution
            minute = reported_ms - reported_ms % fine["step_ms"]
            verdict = ("consistent" if minute == fine["ms"] else
                       "earlier" if minute < fine["ms"] else "later")
            evidence.append(f"on {fine['timeframe']} bars the {audit.trigger} reaches it in the "
                            f"{fine['time']} bar, at {px(fine['trigger_price']):,.2f}")
    else:
        verdict = "undetermined" if beyond_data else "earlier"
        evidence.append(f"the rules do not liquidate it through {_iso(market.times[-1])}")
    # where the trigger series came closest to the liquidation price, up to the report
    upto = min(r, len(market) - 1) if not (out.liquidated[0] and t < r) else t
    path = liquidation_path(market, rulebook, float(_sign(audit)), audit.size, audit.entry_price,
                            audit.margin, audit.leverage, i, upto + 1, True, fee)
    o, h, low = market.prices(audit.trigger)
    sgn = _sign(audit)
    extreme = (low if sgn > 0 else h)[i:upto + 1].copy()
    word = "low" if sgn > 0 else "high"
    column = ("mark_" if audit.trigger == "mark" else "") + word
    # detail bars: the report's own bar only up to the reported minute, and the extreme's minute named
    rows = _detail_rows(detail, market, upto, [column], reported_ms) if upto == r else None
    if rows is not None:
        extreme[-1] = rows[column].min() if sgn > 0 else rows[column].max()
    shown_sgn, shown_x, shown_path = sgn, extreme, path
    if usd:                                     # the distance as the user's prices give it
        with np.errstate(divide="ignore"):
            shown_sgn, shown_x, shown_path = -sgn, 1.0 / extreme, 1.0 / path
        word = "low" if shown_sgn > 0 else "high"
    room = shown_sgn * (shown_x - shown_path) / shown_path
    k = int(np.nanargmin(room))
    when = _iso(market.times[i + k])
    rows = _detail_rows(detail, market, i + k, [column], reported_ms if i + k == r else None)
    if rows is not None:
        when = _iso(int((rows[column].idxmin() if sgn > 0 else rows[column].idxmax()).value // 1_000_000))
    audit.closest = {"time": when, "price": float(shown_x[k]),
                     "liquidation_price": float(shown_path[k]), "distance_pct": float(room[k] * 100)}
    if verdict == "earlier":
        evidence.append(f"closest {audit.trigger} price before the report: {word} {shown_x[k]:,.2f} at "
                        f"{when}, {abs(room[k]) * 100:.2f} % "
                        f"{'above' if shown_sgn > 0 else 'below'} the liquidation price {shown_path[k]:,.2f}")
    if reported_price is not None and r < len(market) and not beyond_data:
        lo_, hi_ = sorted((px(market.last[2][r]), px(market.last[1][r])))
        where = "inside" if lo_ <= reported_price <= hi_ else "outside"
        evidence.append(f"reported price {reported_price:,.2f} is {where} the {_iso(market.times[r])} "
                        f"bar's last-price range {lo_:,.2f} to {hi_:,.2f}")
    if beyond_data:
        evidence.append(f"the data ends at {_iso(market.times[-1])}, before the report")
    audit.verdict = verdict
    audit.verdict_text = VERDICTS[verdict]
    if fine is not None and r == t and verdict == "consistent":
        audit.verdict_text = f"consistent within a {fine['timeframe']} bar"
    audit.evidence = evidence


def _sign(audit: PositionAudit) -> int:
    return 1 if audit.side == "long" else -1


def _extreme(market: Market, audit: PositionAudit, t: int) -> float:
    o, h, low = market.prices(audit.trigger)
    return float(low[t] if audit.side == "long" else h[t])


# --- many positions ------------------------------------------------------------------------------

def audit_positions(entries: pd.DataFrame, *, symbol: str, exchange: str = "binance-usdm",
                    margin_mode: str = "isolated", trigger: str = "mark", timeframe: str | None = None,
                    end: Any = None, datadir=None, frame: pd.DataFrame | None = None,
                    tiers: "TierHistory | TierTable | None" = None,
                    taker_fee: float | None = None, liquidation: str = "partial",
                    liquidation_fee: float | None = None) -> pd.DataFrame:
    """Audit many positions of one symbol at once.

    ``entries`` has ``entry_time``, ``side`` and two of ``size``, ``margin``, ``leverage``
    (optional ``entry_price``: default the entry bar's open; optional ``end_time``: default the
    end of the data). Each is held until liquidated or its end. Returns ``entries`` with
    ``liquidated``, ``liquidation_time``, ``liquidation_price``, ``trigger_price``,
    ``bankruptcy_price``, ``gap``, ``tier``, ``funding_paid``, ``bars_held`` and the resolved
    ``size``/``margin``/``leverage`` (of the first liquidation event), and ``partial_steps`` (the
    exchange's partial steps, :func:`audit_position`) and ``closed_time`` (when a liquidation closed
    the position; NaT when it survived).
    """
    rulebook = get_rulebook(exchange)
    mode = MarginMode.parse(margin_mode)
    how = LiquidationMode.parse(liquidation)
    fee = rulebook.taker_fee if taker_fee is None else float(taker_fee)
    if trigger not in TRIGGERS:
        raise InputError(f"trigger must be 'mark' or 'last', got {trigger!r}", field="trigger")
    for col in ("entry_time", "side"):
        if col not in entries.columns:
            raise InputError(f"entries need a {col!r} column", field=col)
    market, _ = _market(symbol, rulebook, timeframe, entries["entry_time"].min(), end, datadir, frame,
                        tiers)
    times = pd.DatetimeIndex(pd.to_datetime(entries["entry_time"], utc=True)).as_unit("ms").asi8
    start = market.index_of(times)
    outside = (start < 0) | (times >= market.times[-1] + market.step_ms)
    if outside.any():
        row = int(np.argmax(outside))
        raise InputError(f"entry_time {_iso(times[row])} (row {row}) is outside the data "
                         f"({_iso(market.times[0])} to {_iso(market.times[-1])})", field="entry_time")
    side = entries["side"].map({v: _side(v) for v in pd.unique(entries["side"])}).to_numpy(float)
    price = (entries["entry_price"].to_numpy(float) if "entry_price" in entries
             else market.last[0][start])
    get = lambda c: entries[c].to_numpy(float) if c in entries else None   # noqa: E731
    size, margin, lev = resolve_size(rulebook, side, price, size=get("size"), margin=get("margin"),
                                     leverage=get("leverage"), taker_fee=fee, margin_mode=mode)
    size, margin, lev = (np.broadcast_to(np.asarray(x, dtype=float), start.shape) for x in (size, margin, lev))
    for name, values in (("size", size), ("margin", margin), ("leverage", lev), ("entry_price", price)):
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"must be a positive number, got {values[row]!r} (row {row})", field=name)
    if "leverage" in entries:
        for j in np.unique(market.epoch_of[start]):
            rows = market.epoch_of[start] == j
            _check_leverage(market.epochs[j].table, size[rows] * price[rows], lev[rows], to_unified(symbol))
    stop = np.full(start.shape, len(market), dtype=np.int64)
    if "end_time" in entries:
        ends = pd.DatetimeIndex(pd.to_datetime(entries["end_time"], utc=True)).as_unit("ms").asi8
        stop = np.minimum(market.index_of(ends) + 1, len(market))
        if (stop <= start).any():
            row = int(np.argmax(stop <= start))
            raise InputError(f"end_time is before entry_time (row {row})", field="end_time")
    out = replay(market, rulebook, Positions.of(side, size, price, margin, lev, start, stop, True),
                 trigger=trigger, taker_fee=fee)
    result = entries.copy()
    result["entry_price"], result["size"], result["margin"], result["leverage"] = price, size, margin, lev
    when = pd.Series(pd.to_datetime(market.times[np.maximum(out.bar, 0)], unit="ms", utc=True),
                     index=result.index)
    result["liquidated"] = out.liquidated
    result["liquidation_time"] = when.where(out.liquidated)
    result["liquidation_price"] = out.liquidation_price
    result["trigger_price"] = out.trigger_price
    result["bankruptcy_price"] = out.bankruptcy_price
    result["gap"] = out.gap
    result["tier"] = pd.Series(out.tier, index=result.index).astype("Int64").where(out.liquidated)
    result["funding_paid"] = out.funding_paid
    result["bars_held"] = out.last_bar - start + 1
    steps = np.zeros(len(result), dtype=np.int64)
    closed = np.where(out.liquidated, out.bar, -1)      # closed whole at the first event ...
    rule = partial_rule(rulebook, how)
    maybe = np.flatnonzero(out.liquidated) if rule is not None else np.array([], dtype=np.int64)
    if rule is not None and rule.kind == "fraction":    # ... unless the rule may step first
        maybe = maybe[size[maybe] * out.trigger_price[maybe] > rule.min_notional]
    elif rule is not None:
        maybe = maybe[out.tier[maybe] > 1]
    fee_rate = rulebook.liquidation_fee_rate if liquidation_fee is None else float(liquidation_fee)
    for r in maybe:
        t = int(out.bar[r])                 # no step at the first event: closed whole there
        pos = Position("", Side(int(side[r])), float(size[r]), float(price[r]), float(price[r]),
                       float(lev[r]), market.epochs[int(market.epoch_of[t])].table)
        if partial_step(rulebook, pos, float(out.trigger_price[r]), float(out.margin_left[r]),
                        rule=rule, fee_rate=fee_rate, taker_fee=fee) is None:
            continue
        chain = liquidation_events(market, rulebook, side[r], size[r], price[r], margin[r], lev[r],
                                   start[r], stop[r], True, trigger=trigger, taker_fee=fee,
                                   liquidation=how, fee_rate=liquidation_fee)
        steps[r] = sum(1 for e in chain.events if e.partial)
        closed[r] = chain.last_bar if chain.closed else -1
    result["partial_steps"] = steps
    result["closed_time"] = pd.Series(pd.to_datetime(market.times[np.maximum(closed, 0)], unit="ms",
                                                     utc=True), index=result.index).where(closed >= 0)
    return result


def _side(value) -> int:
    """+1 or −1 from ``long``/``short``/``buy``/``sell`` or a number ±1."""
    if isinstance(value, (int, float, np.number)) and float(value) in (1.0, -1.0):
        return int(value)
    return int(Side.parse(value))


# --- a backtest's liquidations ---------------------------------------------------------------------

@dataclass
class LiquidationAudit:
    """One liquidation of a backtest, explained."""

    run_id: str
    time: str
    symbol: str
    side: str
    size: float
    entry_price: float
    leverage: float
    margin_mode: str
    trigger: str
    tier: int | None
    maintenance_rate: float | None
    mark_price: float | None
    """The bar's adverse mark extreme (low for a long, high for a short)."""
    last_price: float | None
    """The bar's adverse last-price extreme."""
    liquidation_price: float | None
    trigger_price: float
    bankruptcy_price: float
    fill_price: float
    equity: float | None
    maintenance_margin: float | None
    loss: float
    fee: float
    insurance_flow: float
    gap: bool
    funding_paid: float
    """Funding the trade paid until it was liquidated (negative: received)."""
    other_trigger: str
    """``last`` (or ``mark`` for a run that triggered on last prices)."""
    other_verdict: str
    """When the other trigger would have fired: ``earlier``, ``same bar``, ``later``, ``never``,
    or ``unknown`` (no market data, or a cross account holding several positions)."""
    other_time: str | None
    plot: str | None = None
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    """A partial liquidation step: ``size`` closed at the trigger price, ``remaining`` left open."""
    step: int | None = None
    """1-based number of the event within the trade (steps, then the close)."""
    remaining: float = 0.0
    margin_ratio_after: float | None = None
    """After a partial step: the remainder's margin ratio at the trigger price."""

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


def _run_metadata(root: Path) -> dict[str, dict]:
    """run_id → metadata of the events files under ``root`` (a run or a sweep)."""
    from .io.history import EVENTS_FILE, read_metadata
    files = [root / EVENTS_FILE] if (root / EVENTS_FILE).is_file() else sorted(
        (root / "events").glob(f"run_id=*/{EVENTS_FILE}"))
    out = {}
    for f in files:
        meta = read_metadata(f)
        out[str(meta.get("run_id"))] = meta
    return out


def audit_history(root: "str | os.PathLike[str]", *, datadir=None,
                  plots: "str | os.PathLike[str] | None" = None, bars_before: int = 72,
                  bars_after: int = 24, plotter=None) -> list[LiquidationAudit]:
    """Explain every liquidation in a run's (or a sweep's) margin history.

    Market data (for the other trigger's verdict and the plots) is read from ``datadir`` (default:
    the run's, else btperp's datasets). ``plots``: a folder where ``plotter`` (the report layer's
    :func:`btperp.report.plot_liquidation`; :func:`btperp.report.audit_history` passes it) writes
    one PNG per liquidation.
    """
    if plots is not None and plotter is None:
        raise InputError("plots need a plotter: use btperp.report.audit_history(..., plots=DIR), "
                         "which draws them", field="plots")
    from .io.history import read
    root = Path(root)
    events = read(root, "events")
    history = read(root, "history")
    metas = _run_metadata(root)
    kinds = events["kind"].astype(str)
    liq = events[kinds == "liquidation"]
    if len(liq) and "liquidation_price" in liq and liq["liquidation_price"].isna().all() \
            and liq["equity"].isna().all():
        raise InputError(f"{root}: this history was written by an older btperp without the "
                         f"liquidation details; rerun the backtest", field="path")
    audits: list[LiquidationAudit] = []
    markets: dict[tuple, Any] = {}
    for at, ev in liq.iterrows():
        run = str(ev["run_id"])
        meta = metas.get(run, {})
        settings = meta.get("settings", {})
        symbol = str(ev["symbol"])
        inst = settings.get("instruments", {}).get(symbol, {})
        trade = int(ev["trade_id"])
        ev_run = events[(events["run_id"] == run) & (events["symbol"].astype(str) == symbol)]
        ev_trade = ev_run[ev_run["trade_id"] == trade]
        funding = float(ev_trade.loc[ev_trade["kind"].astype(str) == "funding", "amount"].sum())
        rows = history[(history["run_id"] == run) & (history["symbol"].astype(str) == symbol)
                       & (history["trade_id"] == trade)]
        detail = str(ev["detail"] or "")
        trigger = inst.get("trigger") or ("last" if detail.startswith("last") else "mark")
        a = LiquidationAudit(
            run_id=run, time=_iso(_ms(ev["time"])), symbol=symbol,
            side=str(ev["side"]), size=float(ev["size"]), entry_price=float(ev["entry_price"]),
            leverage=float(ev["leverage"]), margin_mode=inst.get("margin_mode", "isolated"),
            trigger=trigger, tier=None if pd.isna(ev["tier"]) else int(ev["tier"]),
            maintenance_rate=_num(ev["maintenance_rate"]), mark_price=_num(ev["mark_price"]),
            last_price=_num(ev["last_price"]), liquidation_price=_num(ev["liquidation_price"]),
            trigger_price=float(ev["trigger_price"]), bankruptcy_price=float(ev["bankruptcy_price"]),
            fill_price=float(ev["price"]), equity=_num(ev["equity"]),
            maintenance_margin=_num(ev["maintenance_margin"]), loss=float(ev["amount"]),
            fee=float(ev["fee"]), insurance_flow=float(_insurance(events, at, ev_trade)),
            gap="gap" in detail, funding_paid=funding,
            other_trigger="last" if trigger == "mark" else "mark", other_verdict="unknown",
            other_time=None, partial=bool(_value(ev, "partial", False)),
            step=_int(_value(ev, "step", None)), remaining=float(_value(ev, "remaining", 0.0)),
            margin_ratio_after=_num(ev["margin_ratio"]) if _value(ev, "partial", False) else None)
        key = (inst.get("exchange", "binance-usdm"), symbol,
               settings.get("data", {}).get(symbol, {}).get("timeframe"))
        if key not in markets:
            markets[key] = _history_market(key, datadir or settings.get("datadir"))
        market = markets[key]
        if market is None:
            a.notes.append(f"no market data for {symbol} on {key[0]} ({key[2] or 'timeframe unknown'}): "
                           f"the other trigger and the plot need it")
        else:
            _other_trigger(a, market, rows, get_rulebook(key[0]), inst, settings.get("instruments", {}))
            if plots is not None:
                name = f"{run}_{symbol.split('/')[0]}_{trade}_{a.time[:10]}.png"
                a.plot = str(plotter(Path(plots) / name, market, a, rows, ev_trade,
                                     bars_before=bars_before, bars_after=bars_after))
        audits.append(a)
    return audits


def _value(ev, column: str, default):
    """``ev[column]``, or ``default`` when it is null (a history written before the column)."""
    value = ev.get(column)
    return default if value is None or pd.isna(value) else value


def _int(value) -> int | None:
    return None if value is None else int(value)


def _insurance(events: pd.DataFrame, at, ev_trade: pd.DataFrame) -> float:
    """The insurance-fund flow of the liquidation at row ``at``: the row written right after it
    (events follow the account's journal); else the trade's flows at its time."""
    nxt = events.index.get_loc(at) + 1
    if nxt < len(events):
        row = events.iloc[nxt]
        ev = events.loc[at]
        if (str(row["kind"]) == "insurance_fund" and row["time"] == ev["time"]
                and str(row["symbol"]) == str(ev["symbol"]) and row["run_id"] == ev["run_id"]):
            return float(row["amount"])
    return _insurance_at(ev_trade, events.loc[at, "time"])


def _insurance_at(ev_trade: pd.DataFrame, when) -> float:
    fund = ev_trade[(ev_trade["kind"].astype(str) == "insurance_fund") & (ev_trade["time"] == when)]
    return float(fund["amount"].sum())


def _history_market(key, datadir) -> Market | None:
    """The market a run traded, or None when the datasets do not have it."""
    exchange, symbol, timeframe = key
    try:
        return _market(symbol, get_rulebook(exchange), timeframe, None, None, datadir)[0]
    except (DataError, InputError):
        return None


def _other_trigger(a: LiquidationAudit, market: Market, rows: pd.DataFrame, rulebook: Rulebook,
                   inst: Mapping[str, Any], inst_all: Mapping[str, Any]) -> None:
    """When the other price series would have liquidated the trade: before the liquidation, on
    the trade's recorded liquidation prices; after it, by replaying the position as it stood."""
    t = int(market.index_of([_ms(a.time)])[0])
    sgn = 1 if a.side == "long" else -1
    o, h, low = market.prices(a.other_trigger)
    if len(rows):
        bars = market.index_of(rows["time"].dt.as_unit("ms").astype("int64").to_numpy())
        lp = rows["liquidation_price"].to_numpy(float)
        keep = (bars >= 0) & (bars < t) & np.isfinite(lp)
        bars, lp = bars[keep], lp[keep]
        extreme = (low if sgn > 0 else h)[bars]
        crossed = np.flatnonzero(sgn * (extreme - lp) <= 0)
        if len(crossed):
            a.other_verdict, a.other_time = "earlier", _iso(market.times[bars[crossed[0]]])
            return
    if a.liquidation_price is not None:
        x = (low if sgn > 0 else h)[t]
        if sgn * (x - a.liquidation_price) <= 0:
            a.other_verdict, a.other_time = "same bar", a.time
            return
    shared = a.margin_mode == "cross" and sum(
        1 for i in inst_all.values() if i.get("margin_mode") == "cross") > 1
    if a.equity is None or shared:
        a.notes.append("the other trigger after the liquidation is not replayed for a cross account "
                       "holding several positions")
        return
    if t + 1 >= len(market):
        a.other_verdict = "never"
        return
    # the position as it stood (before a partial step: what it closed and what it left): margin =
    # equity at the trigger − unrealized PnL there
    whole = a.size + a.remaining
    margin = a.equity - sgn * whole * (a.trigger_price - a.entry_price)
    out = replay(market, rulebook, Positions.of(sgn, whole, a.entry_price, margin, a.leverage, t + 1,
                                                len(market), False),
                 trigger=a.other_trigger, taker_fee=inst.get("taker_fee"))
    if out.liquidated[0]:
        a.other_verdict, a.other_time = "later", _iso(market.times[out.bar[0]])
    else:
        a.other_verdict = "never"
        a.notes.append(f"the {a.other_trigger} price never reached its liquidation price through "
                       f"{_iso(market.times[-1])}")


def history_frame(audits: list[LiquidationAudit]) -> pd.DataFrame:
    """The audits as a DataFrame, one row per liquidation."""
    return pd.DataFrame([a.to_dict() for a in audits])


__all__ = ["PositionAudit", "LiquidationAudit", "audit_position", "audit_positions", "audit_history",
           "history_frame", "market_of", "tier_history", "resolve_size", "VERDICTS"]

# ADL exposure, an indicator (btperp.adl): re-exported beside the other audits
from .adl import adl_exposure  # noqa: E402

__all__ += ["adl_exposure"]
