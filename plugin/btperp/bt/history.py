"""PerpHistory: the analyzer that writes the per-trade margin history of a PerpBroker run.

Each bar it copies, for every open position, the few numbers that change (time, size, entry,
prices, margin, liquidation and bankruptcy price, the trade's funding and fees) into typed
buffers; every ``batch_rows`` rows the buffers become a Parquet record batch, with the derived
columns (tier, maintenance and initial margin, unrealized PnL, equity, margin ratio) computed in
bulk by the core's own formulas (:func:`btperp.margin.maintenance_margin_array`). Memory stays
bounded whatever the run's length. At the end the events and the run's metadata are written and
both files are renamed into place (:mod:`btperp.io.history`).

Coin-margined (inverse) runs: the account works on each position's mirror (:mod:`btperp.bt.inverse`);
the rows and events are written as the strategy sees them: ``size`` in contracts, ``side`` the
position's own, prices in USD (``entry_price``, ``close``, ``mark_close``, ``extreme_checked``,
``liquidation_price``, ``bankruptcy_price``), every amount in the coin (``notional`` is the position
value in the coin, contracts × contract size / mark).

``btperp.install(cerebro, ..., history="DIR")`` adds it; ``cerebro.addanalyzer(PerpHistory,
path="DIR")`` does the same by hand. ``get_analysis()`` returns the run id and the two paths.
"""

from __future__ import annotations

import array
import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pyarrow as pa

from .. import __version__
from ..account import Fill, FundingPayment, Liquidation, MarginCall, MarginChange, Rejection
from ..errors import DataError, InputError
from ..io.history import (EVENTS_SCHEMA, FLOAT_HISTORY, HISTORY_SCHEMA, HistorySink, file_schema,
                          run_paths, write_events)
from ..io.market import timeframe_name
from ..margin import maintenance_margin_array, margin_ratio, unrealized_pnl
from .broker import PerpBroker
from .feed import BT_EPOCH

#: Buffered per row (float64 each): the prices of the bar, and the number of the position's state.
_ROW = ("time", "state", "close", "mark_close", "extreme_checked", "cross_equity")
#: Buffered once per change of a position's state (``book.rev``): the rest of what cannot be derived.
_STATE = ("book", "table", "trade_id", "size", "entry_price", "position_margin", "liquidation_price",
          "bankruptcy_price", "funding_paid", "fees_paid")


def _ms(bt_days) -> np.ndarray:
    """backtrader date numbers → integer milliseconds since 1970 (the files' time unit)."""
    return np.round((np.asarray(bt_days, dtype=float) - BT_EPOCH) * 86_400_000).astype(np.int64)


def _nullable(values: np.ndarray) -> pa.Array:
    """NaN (no value) as a Parquet null."""
    return pa.array(values, mask=np.isnan(values))


def _labels(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """A dictionary-encoded string column from integer codes into ``names``."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))


def _utc_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _plain(value: Any) -> Any:
    """JSON-safe form of a setting (tier tables by name, enums by value)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


def _timeframe_of(data) -> str | None:
    """The feed's bar length as btperp names it (``1h``, ``4h``, ``1d``), or None."""
    seconds = {bt.TimeFrame.Seconds: 1, bt.TimeFrame.Minutes: 60, bt.TimeFrame.Days: 86_400,
               bt.TimeFrame.Weeks: 7 * 86_400}.get(data._timeframe)
    if seconds is None:
        return None
    try:
        return timeframe_name(pd.Timedelta(seconds=seconds * int(data._compression)))
    except DataError:                       # not a whole number of minutes
        return None


class PerpHistory(bt.Analyzer):
    """Writes ``history.parquet`` and ``events.parquet`` of the run (module docstring).

    Params: ``path`` (directory), ``every`` (``bar``: a row per bar per open position; ``change``:
    only when the position's size, margin, tier, liquidation price, funding or fees change),
    ``run_id`` (default: a hash of the strategy, its parameters, the broker's settings and the
    data range; the runs of a sweep, or a run given a ``run_id``, write into hive partitions
    ``history/run_id=<id>/`` and ``events/run_id=<id>/``), ``batch_rows`` (rows per record batch).
    """

    params = (("path", None), ("every", "bar"), ("run_id", None), ("batch_rows", 65_536))

    def start(self):
        if self.p.path is None:
            raise InputError("PerpHistory needs path= (the directory to write to)", field="history")
        if self.p.every not in ("bar", "change"):
            raise InputError(f"every must be 'bar' or 'change', got {self.p.every!r}", field="every")
        broker = self.strategy.broker
        if not isinstance(broker, PerpBroker):
            raise InputError("PerpHistory records a PerpBroker run: use btperp.install(cerebro, ...)",
                             field="broker")
        self._broker = broker
        self._account = None                # the broker's account, known at the first bar
        self._sweep = bool(getattr(broker.cerebro, "_dooptimize", False)) or self.p.run_id is not None
        self._run_id = None
        self._sink = None
        self._rows = array.array("d")      # rows of len(_ROW) floats, one after the other
        self._states = array.array("d")    # states of len(_STATE) floats (kept: rows point at them)
        self._flush_at = self.p.batch_rows * len(_ROW)
        self._last_tier: dict[int, Any] = {}
        self._changes_only = self.p.every == "change"
        self._any_cross = None              # known once the broker has set up its books
        self._tables: list = []             # TierTable per "table" id
        self._table_ids: dict[int, int] = {}
        self._last: dict[int, int] = {}     # book index -> state number of its last row (every="change")
        self._paths: dict[str, str] = {}

    # --- per bar ----------------------------------------------------------------------------

    # backtrader calls these on every analyzer each bar. PerpHistory has no children and no use for
    # cash notifications, so ``_next`` is the recorder itself and the notifications do nothing
    # (the history must cost under 5 % of the run).
    def next(self):
        broker = self._broker
        if self._sink is None:
            self._open()                # at the first bar: the broker knows its feeds by now
        if not broker.open_positions:
            return
        cross_equity = math.nan
        several_cross = False
        account = self._account
        if self._any_cross:
            cross = [b for b in account.legs if not b.isolated and b.pos.size]
            if cross:
                cross_equity = account.cross_wallet() + sum(b.pos.size * (b.valprice - b.pos.price)
                                                            for b in cross)
                several_cross = len(cross) > 1
        extend = self._rows.extend
        seen_rev, seen_state = self._seen_rev, self._seen_state
        for index, book in enumerate(account.legs):
            size = book.pos.size
            if not size:
                continue
            if several_cross and not book.isolated:
                state = self._new_state(index, book, *account.shared_prices(book))
            elif account.stale(book, seen_rev[index]):
                state = self._new_state(index, book, *account.cached_prices(book))
            else:
                state = seen_state[index]
            if self._changes_only:
                if state == self._last.get(index) and not self._tier_moved(index, book):
                    continue
                self._last[index] = state
            close = book.l_c
            extend((book.dt, state, close.array[close._idx], book.valprice,
                    book.t_low if size > 0 else book.t_high, cross_equity))
        if len(self._rows) >= self._flush_at:
            self._flush()

    _next = next

    def _notify_cashvalue(self, cash, value):
        pass

    def _notify_fund(self, cash, value, fundvalue, shares):
        pass

    def _new_state(self, index: int, book, lp, bp) -> int:
        """Record the position's state (size, margin, prices, funding, fees); returns its number."""
        pos = book.pos
        number = len(self._states) // len(_STATE)
        self._states.extend((index, self._table_id(book.table), book.position_id, pos.size, pos.price,
                             book.margin if book.isolated else math.nan,
                             math.nan if lp is None else lp, math.nan if bp is None else bp,
                             book.trade_funding, book.trade_fees))
        self._seen_rev[index] = book.rev
        self._seen_state[index] = number
        return number

    def _table_id(self, table) -> int:
        """A small integer for each tier table seen (rows store it; the flush looks tables up)."""
        tid = self._table_ids.get(id(table))
        if tid is None:
            tid = self._table_ids[id(table)] = len(self._tables)
            self._tables.append(table)
        return tid

    def _tier_moved(self, index: int, book) -> bool:
        """every='change': whether the mark moved the position into another tier."""
        pos = book.pos
        tier = book.table.lookup(book.inst.rulebook.tier_notional(abs(pos.size), pos.price, book.valprice))
        if self._last_tier.get(index) is tier:
            return False
        self._last_tier[index] = tier
        return True

    # --- files ------------------------------------------------------------------------------

    def _settings(self) -> dict:
        broker = self._broker
        instruments = {}
        data_range = {}
        for book in broker.books:
            inst = book.inst
            instruments[inst.symbol] = {
                "exchange": inst.rulebook.name, "leverage": inst.leverage,
                "margin_mode": str(inst.margin_mode), "maker_fee": inst.maker_fee,
                "taker_fee": inst.taker_fee, "liquidation_fee": inst.liquidation_fee,
                "fill_policy": str(inst.fill_policy), "lot_size": inst.lot_size,
                "trigger": inst.trigger, "mark_fallback": inst.mark_fallback}
            if getattr(book, "mirror", None) is not None:       # coin-margined
                instruments[inst.symbol].update(lot_size=book.lot_size, settle=inst.symbol.rsplit(":", 1)[1],
                                                contract_size=book.mirror.contract_size)
            data = book.data
            cols = getattr(data, "_cols", None)
            if cols is not None and len(cols["datetime"]):
                days = cols["datetime"]
                data_range[inst.symbol] = {"first": _utc_ms(_ms(days[0])), "last": _utc_ms(_ms(days[-1])),
                                           "bars": int(len(days)), "timeframe": _timeframe_of(data)}
        strategy = self.strategy
        return {
            "strategy": type(strategy).__name__,
            "strategy_params": {k: _plain(getattr(strategy.p, k)) for k in strategy.params._getkeys()},
            "cash": broker.startingcash,
            "instruments": instruments,
            "margin_call_levels": list(broker.account.levels),
            "datadir": None if broker.p.datadir is None else str(broker.p.datadir),
            "data": data_range,
        }

    def _open(self):
        self._account = self._broker.account
        books = self._account.legs
        self._any_cross = any(not b.isolated for b in books)
        self._seen_rev = [-1] * len(books)       # per book: rev and state number last recorded
        self._seen_state = [-1] * len(books)
        settings = self._settings()
        if self.p.run_id is not None:
            self._run_id = str(self.p.run_id)
        else:
            digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
            self._run_id = digest.hexdigest()[:12]
        self._settings_cache = settings
        history, self._events_path = run_paths(self.p.path, self._run_id if self._sweep else None)
        self._sink = HistorySink(history, file_schema(HISTORY_SCHEMA, self._sweep), FLOAT_HISTORY)

    def _flush(self):
        width = len(_ROW)
        n = len(self._rows) // width
        if not n:
            return
        block = np.frombuffer(self._rows, dtype=np.float64).reshape(n, width)
        raw = {name: block[:, i] for i, name in enumerate(_ROW)}
        states = np.frombuffer(self._states, dtype=np.float64).reshape(-1, len(_STATE))
        of_row = states[raw["state"].astype(np.int64)]
        raw.update({name: of_row[:, i] for i, name in enumerate(_STATE)})
        books = self._account.legs
        book_ix = raw["book"].astype(np.int64)
        table_ix = raw["table"].astype(np.int64)
        size = raw["size"]
        side = np.sign(size)
        qty = np.abs(size)
        entry, mark = raw["entry_price"], raw["mark_close"]
        tier = np.empty(n, np.int16)
        rate, amount, mm, im = (np.empty(n) for _ in range(4))
        leverage = np.empty(n)
        isolated = np.empty(n, bool)
        for b, t in sorted(set(zip(book_ix.tolist(), table_ix.tolist()))):
            rows = (book_ix == b) & (table_ix == t)
            inst, table = books[b].inst, self._tables[t]
            rb = inst.rulebook
            index, mm[rows] = maintenance_margin_array(rb, table, side[rows], qty[rows], entry[rows],
                                                       mark[rows], inst.leverage, inst.taker_fee)
            tier[rows] = index + 1
            rate[rows] = np.array([x.maintenance_margin_rate for x in table.tiers])[index]
            amount[rows] = np.array([x.maintenance_amount for x in table.tiers])[index]
            im[rows] = rb.initial_margin(side[rows], qty[rows], entry[rows], inst.leverage, inst.taker_fee)
            leverage[rows] = inst.leverage
            isolated[rows] = books[b].isolated
        upnl = unrealized_pnl(side, qty, entry, mark)
        equity = np.where(isolated, raw["position_margin"] + upnl, raw["cross_equity"])
        # cross: the account's maintenance margin (all cross positions of the bar) over its equity
        account_mm = mm.copy()
        cross = ~isolated
        if cross.any():
            times, inverse = np.unique(raw["time"][cross], return_inverse=True)
            account_mm[cross] = np.bincount(inverse, weights=mm[cross], minlength=len(times))[inverse]
        ratio = margin_ratio(account_mm, equity)
        # the ADL score's wallet and unrealized PnL: the isolated position's, or the cross account's
        account_upnl = upnl.copy()
        if cross.any():
            account_upnl[cross] = np.bincount(inverse, weights=upnl[cross], minlength=len(times))[inverse]
        wallet = np.where(isolated, raw["position_margin"], equity - account_upnl)
        adl = np.empty(n)
        for b in np.unique(book_ix).tolist():
            rows = book_ix == b
            adl[rows] = books[b].inst.rulebook.adl_score(
                side=side[rows], entry_price=entry[rows], price=mark[rows],
                bankruptcy_price=raw["bankruptcy_price"][rows], wallet=wallet[rows],
                unrealized=account_upnl[rows], maintenance=account_mm[rows])
        symbols = [b.inst.symbol for b in books]
        extreme, lp, bp = raw["extreme_checked"], raw["liquidation_price"], raw["bankruptcy_price"]
        sizes, notional = qty, qty * mark           # notional: in the settlement currency
        mirrors = [getattr(b, "mirror", None) for b in books]
        if any(m is not None for m in mirrors):
            # coin-margined: the mirror's sides, sizes and prices back to the strategy's (contracts,
            # USD: 1/x, btperp.bt.inverse); amounts are the coin's as they are
            cs = np.array([np.nan if m is None else m.contract_size for m in mirrors])[book_ix]
            inv = ~np.isnan(cs)
            with np.errstate(divide="ignore", invalid="ignore"):
                side = np.where(inv, -side, side)
                sizes = np.where(inv, qty / cs, qty)
                entry, mark, extreme, lp, bp = (np.where(inv, 1.0 / x, x)
                                                for x in (entry, mark, extreme, lp, bp))
        self._sink.write({
            "time": _ms(raw["time"]).astype("datetime64[ms]"),
            "run_id": pa.array([self._run_id] * n, pa.string()),
            "symbol": _labels(book_ix, symbols),
            "trade_id": raw["trade_id"].astype(np.int32),
            "side": _labels((side < 0).astype(np.int32), ["long", "short"]),
            "size": sizes, "entry_price": entry, "close": raw["close"], "mark_close": mark,
            "extreme_checked": extreme, "notional": notional, "tier": tier,
            "maintenance_rate": rate, "maintenance_amount": amount, "initial_margin": im,
            "maintenance_margin": mm, "position_margin": _nullable(raw["position_margin"]),
            "equity": equity, "unrealized_pnl": upnl, "margin_ratio": np.asarray(ratio, float),
            "liquidation_price": _nullable(lp),
            "bankruptcy_price": _nullable(bp),
            "leverage": leverage, "margin_mode": _labels((~isolated).astype(np.int32), ["isolated", "cross"]),
            "funding_paid": raw["funding_paid"], "fees_paid": raw["fees_paid"], "adl_score": adl,
        })
        self._rows = array.array("d")      # a new buffer: the batch's arrays view the old one

    def _metadata(self) -> dict:
        import backtrader
        import pandas
        import pyarrow
        broker = self._broker
        versions = {}
        for table in self._tables:
            versions.setdefault(table.symbol or "?", []).append(table.source)
        return {
            "run_id": self._run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "every": self.p.every,
            "settings": self._settings_cache,
            "tier_tables_used": versions,
            "versions": {"btperp": __version__, "backtrader": backtrader.__version__,
                         "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
                         "numpy": np.__version__},
            "totals": {k: v for k, v in broker.ledger().items()},
        }

    def stop(self):
        if not self._broker.books:      # the run never reached a bar
            return
        if self._sink is None:
            self._open()
        try:
            self._flush()
            meta = self._metadata()
            self._paths["history"] = str(self._sink.commit(meta))
            self._paths["events"] = str(write_events(self._events_path, self._events(), meta,
                                                     partitioned=self._sweep))
        except BaseException:
            self._sink.discard()
            raise
        self.rets["run_id"] = self._run_id
        self.rets["history"] = self._paths["history"]
        self.rets["events"] = self._paths["events"]
        self.rets["rows"] = self._sink.rows
        # what optstrategy pickles back to the parent process: the answer, not the machinery
        self._sink = self._broker = self._account = self._rows = self._states = None
        self._tables = self._table_ids = None
        self._last = self._last_tier = self._seen_rev = self._seen_state = None

    def _events(self) -> dict:
        """The account's records as events, in the order they happened (its journal)."""
        rows: list[dict] = []
        mirrors = getattr(self._broker, "_mirrors", None) or {}
        convert = {Fill: "fill", FundingPayment: "funding_payment", Liquidation: "liquidation",
                   MarginCall: "margin_call"}
        for r in self._broker.account.journal:
            if mirrors and type(r) in convert:          # coin-margined: contracts and USD
                r = getattr(mirrors[r.symbol], convert[type(r)])(r)
            if isinstance(r, Fill):
                rows.append(dict(time=r.time, kind="fill", symbol=r.symbol, trade_id=r.trade_id,
                                 side=r.side, size=r.size, price=r.price,
                                 fee=r.fee, pnl=r.pnl, detail="maker" if r.maker else "taker"))
                if r.insurance_flow:            # an isolated close beyond its bankruptcy price
                    rows.append(dict(time=r.time, kind="insurance_fund", symbol=r.symbol,
                                     trade_id=r.trade_id, side=r.side, amount=r.insurance_flow))
            elif isinstance(r, FundingPayment):
                rows.append(dict(time=r.time, kind="funding", symbol=r.symbol, trade_id=r.position_id,
                                 side="long" if r.size > 0 else "short", size=r.size, amount=r.payment,
                                 rate=r.rate))
            elif isinstance(r, MarginCall):
                rows.append(dict(time=r.time, kind="margin_call", symbol=r.symbol, trade_id=r.trade_id,
                                 price=r.mark_price, level=r.level, margin_ratio=r.margin_ratio))
            elif isinstance(r, Liquidation):
                common = dict(time=r.time, symbol=r.symbol, trade_id=r.position_id, side=r.side)
                rows.append(dict(common, kind="liquidation", size=r.size, price=r.fill_price,
                                 amount=r.loss, fee=r.fee, pnl=r.pnl, trigger_price=r.trigger_price,
                                 bankruptcy_price=r.bankruptcy_price, entry_price=r.entry_price,
                                 leverage=r.leverage, liquidation_price=r.liquidation_price,
                                 tier=r.tier, maintenance_rate=r.maintenance_rate,
                                 maintenance_margin=r.maintenance_margin, equity=r.equity,
                                 mark_price=r.mark_price, last_price=r.last_price,
                                 partial=r.partial, step=r.step, remaining=r.remaining,
                                 margin_ratio=r.margin_ratio if r.partial else None,
                                 detail=f"{r.trigger} trigger, "
                                        + ("partial step at the trigger price" if r.partial
                                           else f"{r.policy} fill") + (", gap" if r.at_open else "")))
                rows.append(dict(common, kind="insurance_fund", amount=r.insurance_flow))
            elif isinstance(r, MarginChange):
                rows.append(dict(time=r.time, kind="margin_change", symbol=r.symbol, trade_id=r.trade_id,
                                 amount=r.amount))
            elif isinstance(r, Rejection):
                rows.append(dict(time=r.time, kind="rejection", symbol=r.symbol, size=r.size,
                                 price=r.price or None, detail=r.reason))
        columns = {f.name: [r.get(f.name) for r in rows] for f in EVENTS_SCHEMA}
        columns["run_id"] = [self._run_id] * len(rows)
        return columns

    def get_analysis(self):
        return self.rets


__all__ = ["PerpHistory"]
