"""Download candles, mark-price candles, funding history and leverage tiers through ccxt into the
``datasets/`` layout (:mod:`btperp.io.market`), incrementally.

* **Venues** (:data:`VENUES`): linear perpetuals on ``binance-usdm``, ``bybit`` and ``okx``;
  coin-margined (inverse) ones, ``BTC/USD:BTC``, on ``binance-coinm`` (ccxt's ``binancecoinm``
  class: Binance serves them from another host, dapi), ``bybit-inverse`` (ccxt's ``bybit`` with
  ``category=inverse``) and ``okx-inverse`` (ccxt's ``okx``, instType SWAP, the instruments whose
  ``ctType`` is inverse). One btperp exchange name per venue and margin type, as the rulebooks and
  the ``datasets/<exchange>/`` folders have; each series records its contract (type, size in USD
  for inverse contracts, settle coin) in its metadata.

* **Own pagination.** ccxt's ``paginate`` option ignores an old ``since`` without ``until`` and
  walks funding history in fixed 8-hour windows, which leaves holes on symbols that fund every 4 or
  1 hours. Here every request names a window that cannot hold more rows than one page (candles:
  page × timeframe; funding: page × 1 hour, the shortest funding interval), because Bybit and OKX
  answer newest first and, given a start alone, send the *latest* rows. The next window starts
  right after the last row received (candles: the next bar; funding: the next millisecond), or
  after an empty window, until ``until``. The walk starts at the market's listing time when the
  exchange has nothing in the window just before it (one request checks).
* **Incremental and resumable.** A series resumes after its last stored row; pages are merged into
  the stored file every ``checkpoint`` pages and at the end, each write atomic (temporary file, then
  rename), so an interrupted run keeps every checkpoint and never leaves a partial file. Rows are
  deduplicated on time; gaps the exchange really has are reported, never filled.
* **Failures.** Network errors, HTTP 429 and 5xx (ccxt's ``NetworkError`` family) are retried
  with exponential backoff, then reported with the series and the page that failed; malformed
  pages are errors naming the row; ccxt's rate limiter is on, and Binance's funding-history
  endpoint gets its own spacing (it allows far fewer calls than its weight suggests).
* **Tiers.** A symbol's current tier table is appended to the exchange's tier history with the
  date it was observed, only when it differs from the last one. Signed endpoints read API keys
  from the environment (``BINANCE_API_KEY``/``BINANCE_API_SECRET``, ...), never logged.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError, InputError
from ..symbols import to_inverse, to_unified
from ..tiers import TierHistory, TierTable
from ..times import to_ms, utc_minute as _iso
from .market import (contract_meta, dataset_symbol, find_gaps, floor_funding_times, parse_timeframe,
                     read_series, series_path, write_series)
from .paths import datasets_dir

SERIES = ("ohlcv", "mark", "funding", "tiers")
HOUR_MS = 3_600_000


class FetchError(DataError):
    """A download failed (after its retries) or the exchange sent something unusable."""


@dataclass(frozen=True)
class Venue:
    """How btperp talks to one exchange through ccxt."""

    name: str
    """btperp's exchange name (the ``datasets/`` folder)."""
    ccxt_id: str
    ohlcv_page: int
    """Candles per request (the exchange's maximum that ccxt passes through)."""
    funding_page: int
    """Funding events per request."""
    funding_spacing_s: float = 0.0
    """Minimum seconds between funding-history calls, beyond ccxt's rate limiter."""
    credentials: tuple[tuple[str, str], ...] = ()
    """(ccxt option, environment variable) pairs for signed endpoints."""
    options: tuple[tuple[str, Any], ...] = ()
    """ccxt client options (what to skip when loading markets)."""
    funding_until: str = "until"
    """The parameter that ends a funding-history window: ccxt's unified ``until`` (inclusive) or
    the exchange's own (OKX ``after``, exclusive: the window end + 1 ms is passed)."""
    signed_tiers: bool = False
    """The tier endpoint needs API keys."""
    tiers_in_contracts: bool = False
    """The exchange bounds its tiers in contracts (OKX): converted with the market's contract value
    by :meth:`btperp.tiers.TierTable.from_okx`."""
    inverse: bool = False
    """Coin-margined (inverse) perpetuals: quoted in USD, margined and settled in the coin
    (``BTC/USD:BTC``); a linear venue takes USDT/USDC-settled ones only."""
    counterpart: str | None = None
    """The venue of the other margin type on the same exchange (named in errors)."""
    max_window_days: int | None = None
    """The longest ``startTime``..``endTime`` span a candle request may name (Binance COIN-M: 200 days)."""


VENUES = {
    # Binance USDⓈ-M: klines up to 1000 per call through ccxt (1500 allowed, higher weight);
    # GET /fapi/v1/fundingRate: 1000 per call, shares a 500 calls / 5 min / IP limit.
    "binance-usdm": Venue("binance-usdm", "binanceusdm", 1000, 1000, 0.6,
                          (("apiKey", "BINANCE_API_KEY"), ("secret", "BINANCE_API_SECRET")),
                          signed_tiers=True, counterpart="binance-coinm"),
    # Binance COIN-M (dapi.binance.com, ccxt's binancecoinm class): GET /dapi/v1/klines and
    # /dapi/v1/markPriceKlines "Default 500; max 1500", a startTime..endTime span of at most 200
    # days, the most recent ``limit`` rows of the span; GET /dapi/v1/fundingRate "Default 100; max
    # 1000" (weight 1, no shared funding limit documented). Brackets (GET /dapi/v2/leverageBracket,
    # signed) are bounded in the coin (qtyFloor/qtyCap), what the binance-coinm rulebook looks
    # tiers up by (position value in the coin).
    "binance-coinm": Venue("binance-coinm", "binancecoinm", 1000, 1000, 0.0,
                           (("apiKey", "BINANCE_API_KEY"), ("secret", "BINANCE_API_SECRET")),
                           signed_tiers=True, inverse=True, counterpart="binance-usdm", max_window_days=200),
    # Bybit v5: /market/kline and /market/mark-price-kline 1000 per call, /market/funding/history
    # 200; risk limits (tiers) are public. Only linear instruments are loaded.
    "bybit": Venue("bybit", "bybit", 1000, 200, 0.0,
                   (("apiKey", "BYBIT_API_KEY"), ("secret", "BYBIT_API_SECRET")),
                   (("fetchMarkets", {"types": ["linear"]}),), counterpart="bybit-inverse"),
    # Bybit v5 with category=inverse (ccxt's bybit class, inverse markets only): the same
    # endpoints and page sizes; risk limits (riskLimitValue, mmDeduction) are in the coin.
    "bybit-inverse": Venue("bybit-inverse", "bybit", 1000, 200, 0.0,
                           (("apiKey", "BYBIT_API_KEY"), ("secret", "BYBIT_API_SECRET")),
                           (("fetchMarkets", {"types": ["inverse"]}),), inverse=True, counterpart="bybit"),
    # OKX v5: history candles and mark-price candles 100 per call, funding-rate-history 100 (the
    # last three months only); windows end with ``after`` (exclusive). Position tiers
    # (public/position-tiers, public; ccxt asks for the cross-margin tiers) are bounded by position
    # size in contracts: stored in base units (contracts × ctVal), see TierTable.from_okx.
    "okx": Venue("okx", "okx", 100, 100, 0.0,
                 (("apiKey", "OKX_API_KEY"), ("secret", "OKX_API_SECRET"), ("password", "OKX_API_PASSWORD")),
                 (("fetchMarkets", {"types": ["swap", "future"]}),),
                 funding_until="after", tiers_in_contracts=True, counterpart="okx-inverse"),
    # OKX coin-margined swaps (BTC-USD-SWAP): the same client and instType SWAP as "okx", the
    # instruments whose ctType is inverse (ctVal in USD: 100 for BTC-USD-SWAP). Tiers are bounded
    # in contracts; contracts × ctVal gives USD of face value, the size of the position's mirror
    # (btperp.inverse), as OKX's linear tiers in base units are the size of a linear position.
    "okx-inverse": Venue("okx-inverse", "okx", 100, 100, 0.0,
                         (("apiKey", "OKX_API_KEY"), ("secret", "OKX_API_SECRET"), ("password", "OKX_API_PASSWORD")),
                         (("fetchMarkets", {"types": ["swap", "future"]}),),
                         funding_until="after", tiers_in_contracts=True, inverse=True, counterpart="okx"),
}


def venue(exchange: str) -> Venue:
    if exchange not in VENUES:
        raise InputError(f"unknown exchange {exchange!r}; fetch supports {', '.join(VENUES)}",
                         field="exchange")
    return VENUES[exchange]


def make_client(v: Venue, env: "dict[str, str] | None" = None):
    """A ccxt client with its rate limiter on and the API keys the environment holds.

    With keys set, ccxt's ``load_markets`` would also call the signed wallet coin list, which
    fetch never needs: it is switched off.
    """
    import ccxt
    env = os.environ if env is None else env
    config: dict[str, Any] = {"enableRateLimit": True, "options": copy.deepcopy(dict(v.options))}
    for option, variable in v.credentials:
        if env.get(variable):
            config[option] = env[variable]
    client = getattr(ccxt, v.ccxt_id)(config)
    client.has = {**client.has, "fetchCurrencies": False}
    return client


@dataclass
class SeriesReport:
    """What one fetch added to one series."""

    exchange: str
    symbol: str
    series: str
    timeframe: str | None
    added: int = 0
    first_added: str | None = None
    last_added: str | None = None
    rows: int = 0
    """Rows stored after the fetch."""
    requests: int = 0
    gaps: str | None = None
    """Gaps in the stored series (the exchange's own; reported, not filled)."""
    path: str | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Fetcher:
    """Downloads one exchange's series for some symbols (module docstring).

    ``client``: a ccxt exchange object (tests pass one whose HTTP session is canned); ``sleep``
    and ``clock`` (ms) are injectable for the same reason.
    """

    def __init__(self, exchange: str, *, datadir: "str | os.PathLike[str] | None" = None, client=None,
                 retries: int = 5, backoff_s: float = 1.0, checkpoint: int = 50,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], int] | None = None, progress: bool = False):
        self.venue = venue(exchange)
        self.root = datasets_dir(datadir)
        self.client = client if client is not None else make_client(self.venue)
        self.client.enableLastJsonResponse = True        # to count the rows ccxt could not parse
        self.retries = retries
        self.backoff_s = backoff_s
        self.checkpoint = checkpoint
        self.sleep = sleep
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.progress = progress
        self._last_funding_call = -math.inf
        self._markets_loaded = False
        self._markets: dict[str, dict] = {}          # the markets checked, by unified symbol

    # --- checks ------------------------------------------------------------------------------

    def market(self, symbol: str) -> dict:
        """The ccxt market of a perpetual of the venue's margin type (linear, or coin-margined on
        an inverse venue), or an :class:`InputError` naming ``symbol``."""
        if not self._markets_loaded:
            self._call("markets", "load_markets", self.client.load_markets)
            self._markets_loaded = True
        v = self.venue
        markets = self.client.markets or {}
        by_id = getattr(self.client, "markets_by_id", None) or {}
        if symbol in markets:
            unified = symbol
        elif symbol in by_id:                   # the exchange's spelling: BTC-USDT-SWAP, BTCUSD_PERP
            unified = by_id[symbol][0]["symbol"]
        elif v.inverse:
            unified = dataset_symbol(symbol, v.name)      # BTCUSDT here: an error naming the venue
        else:
            unified = to_unified(symbol)
            if unified not in markets and _reads_inverse(symbol):
                raise InputError(f"{symbol!r} reads as a coin-margined symbol ({to_inverse(symbol)}); "
                                 f"{v.name} has linear (USDT/USDC-settled) perpetuals: fetch it with "
                                 f"--exchange {v.counterpart}", field="symbol")
        if unified not in markets:
            near = sorted(s for s in markets if s.split("/")[0] == unified.split("/")[0])[:8]
            raise InputError(f"{v.name} has no market {unified!r}"
                             + (f"; near: {', '.join(near)}" if near else ""), field="symbol")
        m = markets[unified]
        kind = "inverse" if v.inverse else "linear"
        if not (m.get("swap") and m.get(kind) and m.get("expiry") is None):
            if v.inverse:
                raise InputError(f"{unified} on {v.name} is not a coin-margined perpetual "
                                 f"(type {m.get('type')!r}{', linear' if m.get('linear') else ''}); "
                                 f"{v.name} fetches perpetuals settled in their coin (BTC/USD:BTC)"
                                 + (f"; linear ones: --exchange {v.counterpart}" if m.get("linear") else ""),
                                 field="symbol")
            raise InputError(f"{unified} on {v.name} is not a linear perpetual "
                             f"(type {m.get('type')!r}{', coin-margined' if m.get('inverse') else ''}); "
                             f"{v.name} fetches USDT/USDC-settled perpetuals"
                             + (f"; coin-margined ones: --exchange {v.counterpart}"
                                if m.get("inverse") and v.counterpart else ""),
                             field="symbol")
        self._markets[unified] = m
        return m

    def check_timeframe(self, timeframe: str) -> None:
        parse_timeframe(timeframe)
        offered = getattr(self.client, "timeframes", None) or {}
        if timeframe not in offered:
            raise InputError(f"{self.venue.name} has no {timeframe!r} candles; it offers "
                             f"{', '.join(offered)}", field="timeframe")

    def check_series(self, what: Sequence[str]) -> None:
        unknown = [w for w in what if w not in SERIES]
        if unknown:
            raise InputError(f"unknown series {', '.join(unknown)}; choose from {', '.join(SERIES)}",
                             field="what")
        has = getattr(self.client, "has", {}) or {}
        needs = {"mark": "fetchMarkOHLCV", "funding": "fetchFundingRateHistory",
                 "tiers": ("fetchMarketLeverageTiers", "fetchLeverageTiers")}
        for w in what:
            if w == "ohlcv":
                continue
            caps = needs[w] if isinstance(needs[w], tuple) else (needs[w],)
            if not any(has.get(c) for c in caps):
                raise InputError(f"{self.venue.name} does not offer {w} through ccxt ({' or '.join(caps)})",
                                 field="what")

    # --- the calls -----------------------------------------------------------------------------

    def _call(self, where: str, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` with retries and backoff on network errors, 429 and 5xx."""
        import ccxt
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except ccxt.NetworkError as exc:         # timeouts, 429 (DDoSProtection), 5xx
                if attempt == self.retries:
                    raise FetchError(f"{self.venue.name} {where}: {what} failed after "
                                     f"{self.retries + 1} attempts: {type(exc).__name__}: "
                                     f"{self._redact(str(exc))[:300]}") from None
                self.sleep(self.backoff_s * 2 ** attempt)
            except ccxt.AuthenticationError as exc:
                raise FetchError(f"{self.venue.name} {where}: {what} needs API keys; set {self._key_names()} "
                                 f"in the environment ({type(exc).__name__})") from None
            except ccxt.ExchangeError as exc:
                raise FetchError(f"{self.venue.name} {where}: {what} refused: "
                                 f"{self._redact(str(exc))[:300]}") from None
        raise AssertionError("unreachable")

    def _check_parsed(self, page: Any, where: str, cursor: int) -> None:
        """ccxt drops rows it cannot parse (a missing timestamp): a page shorter than the exchange's
        answer is an error, not a silent hole."""
        raw = _rows_of(getattr(self.client, "last_json_response", None))
        if raw is not None and isinstance(page, list) and len(page) < raw:
            raise FetchError(f"{where}: the page from {_iso(cursor)} had {raw} rows, of which ccxt "
                             f"could parse {len(page)}: malformed rows from the exchange")

    def _key_names(self) -> str:
        return " and ".join(variable for _, variable in self.venue.credentials)

    def _redact(self, text: str) -> str:
        for option, _ in self.venue.credentials:
            secret = getattr(self.client, option, None)
            if isinstance(secret, str) and secret:
                text = text.replace(secret, "***")
        return text

    # --- pages -------------------------------------------------------------------------------------

    def _candle_pages(self, symbol: str, kind: str, timeframe: str, since: int, until: int,
                      report: SeriesReport) -> Iterator[tuple[list[list[float]], int]]:
        """Candles opening in [since, until], one window of at most a page of bars per request."""
        step = _step_ms(timeframe)
        span = self._window_ms(timeframe)
        cursor = since
        where = f"{symbol} {kind} {timeframe}"
        while cursor <= until:
            # the window ends 1 ms before a bar opens: inclusive (Binance, Bybit) and exclusive
            # (OKX) ends then take the same bars
            end = min(cursor + span, until + step) - 1
            params = {"until": end, **({"price": "mark"} if kind == "mark" else {})}
            page = self._call(where, f"page from {_iso(cursor)}", self.client.fetch_ohlcv, symbol,
                              timeframe, since=cursor, limit=self.venue.ohlcv_page, params=params)
            report.requests += 1
            self._check_parsed(page, where, cursor)
            rows = [r for r in _check_candles(page, where, cursor, step) if cursor <= r[0] <= min(end, until)]
            # after an empty window, the next one
            cursor = int(rows[-1][0]) + step if rows else end + 1
            yield rows, min(cursor, until)

    def _funding_pages(self, symbol: str, since: int, until: int,
                       report: SeriesReport) -> Iterator[tuple[list[list[float]], int]]:
        """Funding events in [since, until]; a window spans a page of hours (at most one event an
        hour on any exchange, so a window never holds more than a page)."""
        cursor = since
        where = f"{symbol} funding"
        span = self._window_ms(None)
        exclusive = self.venue.funding_until != "until"
        while cursor <= until:
            end = min(cursor + span - 1, until)
            wait = self._last_funding_call + self.venue.funding_spacing_s - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            page = self._call(where, f"page from {_iso(cursor)}", self.client.fetch_funding_rate_history,
                              symbol, since=cursor, limit=self.venue.funding_page,
                              params={self.venue.funding_until: end + 1 if exclusive else end})
            self._last_funding_call = time.monotonic()
            report.requests += 1
            self._check_parsed(page, where, cursor)
            rows = [r for r in _check_funding(page, where, cursor) if cursor <= r[0] <= end]
            cursor = int(rows[-1][0]) + 1 if rows else end + 1
            yield rows, min(cursor, until)

    # --- one series ----------------------------------------------------------------------------------

    def fetch_series(self, symbol: str, kind: str, timeframe: str | None, since: int,
                     until: int, listed: int | None = None) -> SeriesReport:
        """Fetch one series from after its last stored row (or ``since``) to ``until`` (ms).

        ``listed``: the market's listing time; when the exchange has nothing just before it, nothing
        before it is requested.
        """
        unified = to_unified(symbol)
        tf = timeframe if kind in ("ohlcv", "mark") else None
        path = series_path(self.venue.name, unified, kind, tf, self.root)
        report = SeriesReport(self.venue.name, unified, kind, tf, path=str(path))
        stored = read_series(path, kind, timeframe=tf, warn_gaps=False) if path.is_file() else None
        start = since
        if stored is not None and len(stored):
            last = to_ms(stored["time"].iloc[-1])
            # candles: the next bar; funding: the next second (stored times are floored to it)
            step = _step_ms(tf) if tf else 1000
            start = max(since, last + step)
        elif listed is not None and since < listed <= until and self._listing_holds(unified, kind, tf, since,
                                                                                       listed, report):
            start = listed
        pages = self._pages(unified, kind, tf, start, until, report)
        pending: list[list[float]] = []
        bar = self._bar(f"{unified} {kind}{' ' + tf if tf else ''}", start, until)
        was_empty = stored is None or not len(stored)
        count = 0
        for rows, reached in pages:
            if bar is not None:
                bar.update(reached - bar.n)
            if not rows:
                continue
            pending.extend(rows)
            count += 1
            if count % self.checkpoint == 0:
                stored = self._store(path, kind, tf, stored, pending, report)
                pending = []
        stored = self._store(path, kind, tf, stored, pending, report)
        if bar is not None:
            bar.close()
        report.rows = 0 if stored is None else len(stored)
        if stored is not None and tf and len(stored) > 1:
            gaps = find_gaps(stored["time"], parse_timeframe(tf))
            report.gaps = gaps.describe() if gaps.count else None
        if report.added == 0:
            report.note = "up to date" if stored is not None and len(stored) else "the exchange returned nothing"
        elif was_empty:
            first = to_ms(stored["time"].iloc[0])
            # a bar late, or a day late for funding (intervals up to 8 hours): the exchange's history
            # starts there (OKX keeps three months of funding), or the market was listed then
            late = _step_ms(tf) if tf else 24 * HOUR_MS
            if first - since >= late:
                report.note = (f"the exchange's history starts at {_iso(first)}, after the requested "
                               f"{_iso(since)}")
        return report

    def _window_ms(self, tf: str | None) -> int:
        """One request's window: a page of bars (candles, ``tf`` given; no longer than the venue
        allows a span to be) or a page of hours (funding)."""
        if not tf:
            return self.venue.funding_page * HOUR_MS
        span = self.venue.ohlcv_page * _step_ms(tf)
        if self.venue.max_window_days:
            span = min(span, self.venue.max_window_days * 24 * HOUR_MS)
        return span

    def _pages(self, symbol: str, kind: str, tf: str | None, start: int, until: int,
               report: SeriesReport) -> Iterator[tuple[list[list[float]], int]]:
        return (self._candle_pages(symbol, kind, tf, start, until, report) if tf
                else self._funding_pages(symbol, start, until, report))

    def _listing_holds(self, symbol: str, kind: str, tf: str | None, since: int, listed: int,
                       report: SeriesReport) -> bool:
        """Whether the exchange has nothing in the window just before the market's listing time,
        so the walk can start there. Listing times are not always the first data: Binance lists
        BTCUSDT on 2019-09-25 (``onboardDate``), yet its candles start on 2019-09-08."""
        rows, _ = next(self._pages(symbol, kind, tf, max(since, listed - self._window_ms(tf)), listed - 1,
                                   report))
        return not rows

    def _bar(self, label: str, start: int, until: int):
        if not self.progress or until <= start:
            return None
        from tqdm import tqdm
        bar = tqdm(total=until - start, desc=label, unit="ms", leave=False,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        return _Progress(bar, start)

    def _store(self, path: Path, kind: str, tf: str | None, stored: pd.DataFrame | None,
               rows: list[list[float]], report: SeriesReport) -> pd.DataFrame | None:
        """Merge ``rows`` into the stored series and write it atomically."""
        if not rows:
            return stored
        new = _frame(kind, rows)
        if kind == "funding":
            new = floor_funding_times(new)
        # pages are ascending; a row repeated across two pages is kept once (write_series validates)
        new = new.drop_duplicates("time", keep="first")
        if stored is not None and len(stored):
            new = new[new["time"] > stored["time"].iloc[-1]]
            merged = pd.concat([stored, new], ignore_index=True)
        else:
            merged = new.reset_index(drop=True)
        if not len(new):
            return stored
        meta = {"exchange": self.venue.name, "symbol": report.symbol, "timeframe": tf,
                "source": f"ccxt {getattr(self.client, 'id', '?')} {_ccxt_version()}",
                "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if report.symbol in self._markets:
            meta["contract"] = contract_meta(self._markets[report.symbol])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_series(merged, path, kind, meta=meta)
        t = new["time"]
        report.added += len(new)
        report.first_added = report.first_added or t.iloc[0].strftime("%Y-%m-%d %H:%M")
        report.last_added = t.iloc[-1].strftime("%Y-%m-%d %H:%M")
        return merged

    # --- tiers ---------------------------------------------------------------------------------------

    def fetch_tiers(self, symbols: Iterable[str], today: str | None = None) -> list[SeriesReport]:
        """Append each symbol's current tier table to the tier history when it changed."""
        from .tierfile import TierHistoryFile, write_tier_histories
        from .paths import tier_history_path
        today = today or datetime.now(timezone.utc).strftime("%Y-%m-%d")
        path = tier_history_path(self.venue.name, self.root)
        found = TierHistoryFile.read(path) if path.is_file() else None
        histories = dict(found.histories()) if found is not None else {}
        reports, changed = [], False
        for symbol in symbols:
            market = self.market(symbol)
            unified = market["symbol"]
            report = SeriesReport(self.venue.name, unified, "tiers", None, path=str(path))
            rows = self._call(f"{unified} tiers", "leverage tiers", self.client.fetch_market_leverage_tiers,
                              unified)
            report.requests += 1
            where = f"{self.venue.name} {unified} {today}"
            if self.venue.tiers_in_contracts:
                table = _okx_table(rows, market, unified, where)
            else:
                table = TierTable.from_ccxt(_ccxt_tiers(rows), symbol=unified, source=where)
            old = histories.get(unified)
            if old is not None and old.versions[-1][1] == table:
                report.note = f"unchanged since {old.versions[-1][0]:%Y-%m-%d}"
            else:
                versions = list(old.versions) if old is not None else []
                versions = [(w, t) for w, t in versions if w.strftime("%Y-%m-%d") != today]
                versions.append((today, table))
                histories[unified] = TierHistory(versions, symbol=unified)
                report.added, report.first_added = 1, today
                changed = True
            report.rows = len(histories[unified].versions)
            reports.append(report)
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tier_histories(path, histories, exchange=self.venue.name,
                                 source=f"ccxt {getattr(self.client, 'id', '?')} {_ccxt_version()}")
        return reports

    # --- everything --------------------------------------------------------------------------------

    def fetch(self, symbols: Sequence[str], *, timeframe: str = "1h", since: Any, until: Any = None,
              what: Sequence[str] | None = None) -> list[SeriesReport]:
        """Fetch ``what`` (default: every series the exchange offers, tiers from a signed endpoint
        only with API keys) for every symbol; returns one report per symbol and series."""
        from .market import inclusive_end
        skipped = None
        if what is None:
            what = list(SERIES)
            if "tiers" in what and self.venue.signed_tiers and not getattr(self.client, "apiKey", None):
                what.remove("tiers")
                skipped = f"skipped: the tier endpoint is signed; set {self._key_names()} to fetch tiers"
        what = list(what)
        self.check_series(what)
        if any(w in ("ohlcv", "mark") for w in what):
            self.check_timeframe(timeframe)
        markets = [self.market(s) for s in symbols]
        unified = [m["symbol"] for m in markets]
        listed = {m["symbol"]: m.get("created") for m in markets if m.get("created")}
        since_ms = to_ms(since)
        now = self.clock()
        until_ms = min(to_ms(inclusive_end(until)), now) if until is not None else now
        if since_ms > until_ms:
            raise InputError(f"--since {since} is after --until {until}", field="since")
        reports = []
        for s in unified:
            for kind in ("ohlcv", "mark", "funding"):
                if kind in what:
                    # a candle is complete once its bar has closed
                    last = until_ms
                    if kind != "funding":
                        step = _step_ms(timeframe)
                        last = min(until_ms, (now // step) * step - step)
                    reports.append(self.fetch_series(s, kind, timeframe, since_ms, last,
                                                     listed=listed.get(s)))
        if "tiers" in what:
            reports.extend(self.fetch_tiers(unified))
        elif skipped:
            reports.extend(SeriesReport(self.venue.name, s, "tiers", None, note=skipped) for s in unified)
        return reports


class _Progress:
    """A tqdm bar over a time range (shows the share of the range fetched)."""

    def __init__(self, bar, start: int):
        self._bar, self._start, self.n = bar, start, start

    def update(self, delta: int) -> None:
        if delta > 0:
            self._bar.update(delta)
            self.n += delta

    def close(self) -> None:
        self._bar.close()


def _rows_of(answer: Any) -> int | None:
    """Rows in an exchange's raw JSON answer: a list (Binance), ``result.list`` (Bybit v5) or
    ``data`` (OKX v5); None when the shape is unknown."""
    if isinstance(answer, list):
        return len(answer)
    if isinstance(answer, dict):
        inner = answer.get("result")
        if isinstance(inner, dict) and isinstance(inner.get("list"), list):
            return len(inner["list"])
        if isinstance(answer.get("data"), list):
            return len(answer["data"])
    return None


def _reads_inverse(symbol: str) -> bool:
    """Whether a symbol no linear market matched is spelled as a coin-margined one: ``BTCUSD``,
    ``BTCUSD_PERP``, ``BTC-USD-SWAP``, ``BTC/USD:BTC`` (quoted in USD)."""
    try:
        return to_unified(symbol).split(":")[0].endswith("/USD") and bool(to_inverse(symbol))
    except InputError:
        return False


def _step_ms(timeframe: str) -> int:
    return int(parse_timeframe(timeframe).total_seconds() * 1000)


def _ccxt_version() -> str:
    import ccxt
    return ccxt.__version__


def _check_candles(page: Any, where: str, cursor: int, step: int) -> list[list[float]]:
    """ccxt candles ``[[ms, open, high, low, close, volume], ...]``: checked, ascending, on the grid."""
    if page is None:
        return []
    if not isinstance(page, list):
        raise FetchError(f"{where}: page from {_iso(cursor)} is {type(page).__name__}, not a list of candles")
    out = []
    for i, row in enumerate(page):
        try:
            t = int(row[0])
            prices = [float(v) for v in row[1:5]]
            # mark-price candles carry no volume (OKX: none at all)
            volume = float(row[5]) if len(row) > 5 and row[5] is not None else 0.0
            if len(prices) < 4 or not all(math.isfinite(v) for v in (*prices, volume)):
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise FetchError(f"{where}: malformed candle {i}{_at(row)} of the page from {_iso(cursor)}: "
                             f"{row!r}") from None
        if t % step:
            raise FetchError(f"{where}: candle {i} of the page from {_iso(cursor)} at {_iso(t)} is off the "
                             f"timeframe grid")
        if out and t <= out[-1][0]:
            raise FetchError(f"{where}: candles out of order in the page from {_iso(cursor)} at row {i}")
        out.append([t, *prices, volume])
    return out


def _at(row: Any) -> str:
    """`` (at <time>)`` for a candle whose time at least can be read, else nothing."""
    try:
        return f" (at {_iso(int(row[0]))})"
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        return ""


def _check_funding(page: Any, where: str, cursor: int) -> list[list[float]]:
    """ccxt funding history ``[{timestamp, fundingRate}, ...]`` → ``[[ms, rate], ...]``, ascending."""
    if page is None:
        return []
    if not isinstance(page, list):
        raise FetchError(f"{where}: page from {_iso(cursor)} is {type(page).__name__}, not a list")
    out = []
    for i, item in enumerate(page):
        try:
            t = int(item["timestamp"])
            rate = float(item["fundingRate"])
            if not math.isfinite(rate):
                raise ValueError
        except (TypeError, ValueError, KeyError):
            raise FetchError(f"{where}: malformed funding event {i} of the page from {_iso(cursor)}: "
                             f"{item!r}") from None
        out.append([t, rate])
    out.sort(key=lambda r: r[0])
    return out


def _frame(kind: str, rows: list[list[float]]) -> pd.DataFrame:
    data = np.asarray(rows, dtype=float)
    time_col = pd.to_datetime(data[:, 0].astype(np.int64), unit="ms", utc=True)
    if kind == "funding":
        return pd.DataFrame({"time": time_col, "rate": data[:, 1]})
    cols = {"time": time_col, "open": data[:, 1], "high": data[:, 2], "low": data[:, 3], "close": data[:, 4]}
    if kind == "ohlcv":
        cols["volume"] = data[:, 5]
    return pd.DataFrame(cols)


def _okx_table(rows: Any, market: dict, symbol: str, where: str) -> TierTable:
    """OKX's tiers of one instrument: ccxt keeps OKX's raw rows in ``info`` (its ``minNotional``
    and ``maxNotional`` are contracts, not notional); converted with the market's ``ctVal``."""
    if not isinstance(rows, list):
        raise FetchError(f"{where}: the tiers answer is {type(rows).__name__}, not a list")
    raw = [r.get("info") if isinstance(r, dict) else r for r in rows]
    ids = {r.get("instId") for r in raw if isinstance(r, dict) and r.get("instId")}
    if ids - {market.get("id")}:                 # a family's answer holding other instruments
        raw = [r for r in raw if isinstance(r, dict) and r.get("instId") in ("", None, market.get("id"))]
    contract_value = market.get("contractSize")
    if contract_value is None:
        contract_value = (market.get("info") or {}).get("ctVal")
    return TierTable.from_okx(raw, contract_value, symbol=symbol, source=where)


def _ccxt_tiers(rows: Any) -> list[dict]:
    """ccxt's unified tiers, keeping of the raw answer only the exchange's maintenance amount
    (Binance ``cum``, Bybit ``mmDeduction``), which TierTable checks against its derivation."""
    out = []
    for r in rows or []:
        info = r.get("info") or {}
        row = {k: r.get(k) for k in ("tier", "minNotional", "maxNotional", "maintenanceMarginRate",
                                      "maxLeverage")}
        if isinstance(info, dict):
            row["info"] = {k: info[k] for k in ("cum", "mmDeduction") if k in info}
        out.append(row)
    return out


__all__ = ["Fetcher", "FetchError", "SeriesReport", "VENUES", "Venue", "venue", "make_client", "SERIES"]
