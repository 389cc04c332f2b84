"""Exchanges' HTTP APIs, canned: ccxt talks to these instead of the network.

Each fake replaces a ccxt client's ``session`` (the ``requests`` layer ccxt's ``fetch`` calls), so
ccxt's own request building, response parsing and HTTP error mapping (429, 5xx) run as in
production. Responses have the real APIs' shapes (field names, strings for decimals, envelopes)
and paging rules: Binance answers oldest first from ``startTime``; Bybit v5 and OKX v5 answer
newest first, and given a start alone send the *latest* rows. Markets and tiers are canned files
(``tests/canned``); series are generated deterministically. A URL the fake does not know fails the
test.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import requests
from requests.structures import CaseInsensitiveDict

CANNED = Path(__file__).resolve().parent / "canned"
HOUR = 3_600_000
FAR = 2**62


class _Cookies:
    def clear(self):
        pass


def _response(url: str, status: int, payload) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = url
    r.reason = {200: "OK", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable",
                400: "Bad Request", 401: "Unauthorized"}.get(status, "")
    r.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    r._content = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    return r


def _canned(*parts: str):
    return json.loads(CANNED.joinpath(*parts).read_text())


class FakeExchange:
    """What every fake shares: one deterministic market history and the failure switches.

    ``bars`` hourly candles from ``start`` (ms); ``missing`` bar indices the exchange does not have
    (real gaps); funding every ``funding_hours`` hours, served from bar ``funding_from`` on (OKX
    keeps three months). ``fail`` queues HTTP statuses to answer instead, per path (the URL's last
    segment, see ``PATHS``): ``{"klines": [429, 503]}``; ``raise_on`` queues exceptions the HTTP
    layer raises instead of answering (``requests.ConnectionError``, ``requests.ReadTimeout``: a
    dropped connection, a timeout); ``down_after`` answers 503 to every call of a path after the
    first n; ``malformed`` breaks the page of the n-th call of a path; ``echo_headers`` makes the
    5xx pages echo the request's headers (as some gateways do: API keys in an error text).

    ``CAPS``: the largest ``limit`` each path accepts, from the exchange's documentation (not from
    btperp's table); a request above it is refused as the exchange refuses it (``OVER_CAP``).
    """

    HOST = ""
    PATHS: dict[str, str] = {}          # series -> the path answering it
    FUNDING_DELAY_MS = 0                # how late after the hour the exchange stamps funding
    RATE_LIMITED: object = None         # the body of a 429
    CAPS: dict[str, int] = {}           # path -> documented maximum of ``limit``
    DEFAULTS: dict[str, int] = {}       # path -> documented default of ``limit``
    OVER_CAP: tuple[int, object] = (400, None)    # (HTTP status, body) of a refused limit

    def __init__(self, start: int, bars: int, *, missing=(), funding_hours: int = 8, funding_from: int = 0,
                 seed: int = 3):
        rng = np.random.default_rng(seed)
        close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
        open_ = np.r_[40_000.0, close[:-1]]
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, bars)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, bars)))
        volume = rng.uniform(100, 900, bars)
        basis = 1 + rng.normal(0, 0.0003, bars)
        keep = np.setdiff1d(np.arange(bars), np.asarray(missing, dtype=int))
        t = start + np.arange(bars, dtype=np.int64) * HOUR
        #: (ms, open, high, low, close, volume) as the exchange writes them
        self.candles = [(int(t[i]), f"{open_[i]:.2f}", f"{high[i]:.2f}", f"{low[i]:.2f}", f"{close[i]:.2f}",
                         f"{volume[i]:.3f}") for i in keep]
        self.marks = [(int(t[i]), f"{open_[i] * basis[i]:.8f}", f"{high[i] * basis[i]:.8f}",
                       f"{low[i] * basis[i]:.8f}", f"{close[i] * basis[i]:.8f}") for i in keep]
        #: (ms on the hour, rate)
        self.events = [(int(t[i]), f"{rng.normal(1e-4, 1e-4):.8f}") for i in range(bars)
                       if i % funding_hours == 0 and i >= funding_from]
        self.fail: dict[str, list[int]] = {}
        self.raise_on: dict[str, list[type]] = {}
        self.echo_headers = False
        self.malformed: dict[str, int] = {}
        self.down_after: dict[str, int] = {}
        self.calls: list[str] = []
        self.queries: list[tuple[str, dict]] = []
        self.cookies = _Cookies()
        self.headers: dict[str, str] = {}

    def expected(self, kind: str) -> np.ndarray:
        """The series as btperp should store it: rows of floats, time in ms (funding: on the second)."""
        if kind == "funding":
            return np.array([[t + self.FUNDING_DELAY_MS - (t + self.FUNDING_DELAY_MS) % 1000, float(r)]
                             for t, r in self.events])
        rows = self.candles if kind == "ohlcv" else self.marks
        return np.array([[float(x) for x in row] for row in rows])

    def attach(self, client):
        client.session = self
        return client

    def request(self, method, url, data=None, headers=None, **_):
        parsed = urlparse(url)
        path = parsed.path.rsplit("/", 1)[-1]
        q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        self.calls.append(path)
        self.queries.append((path, q))
        if parsed.netloc != self.HOST:
            raise AssertionError(f"unexpected host in {url}")
        if self.raise_on.get(path):
            error = self.raise_on[path].pop(0)
            raise error(f"simulated {error.__name__} for {url}")
        if path in self.down_after and self.calls.count(path) > self.down_after[path]:
            return _response(url, 503, "<html><body>503 Service Temporarily Unavailable</body></html>")
        if self.fail.get(path):
            status = self.fail[path].pop(0)
            echo = f" request headers: {dict(headers or {})}" if self.echo_headers else ""
            body = self.RATE_LIMITED if status == 429 else f"<html><body>Bad Gateway{echo}</body></html>"
            return _response(url, status, body)
        if path in self.CAPS and "limit" in q and not 1 <= int(q["limit"]) <= self.CAPS[path]:
            status, body = self.OVER_CAP
            return _response(url, status, body)
        broken = self.malformed.get(path) == self.calls.count(path)
        answer = self.answer(parsed.path, path, q, headers or {}, broken)
        if answer is None:
            raise AssertionError(f"unexpected URL {url}")
        return answer if isinstance(answer, requests.Response) else _response(url, 200, answer)

    def answer(self, full_path: str, path: str, q: dict, headers: dict, broken: bool):
        raise NotImplementedError

    @staticmethod
    def _window(rows, key, lo, hi, limit, newest_first, latest=False):
        """Rows with lo <= key <= hi: the oldest ``limit`` ascending (Binance USDⓈ-M), the newest
        ``limit`` descending (Bybit, OKX), or with ``latest`` the newest ``limit`` ascending
        (Binance COIN-M klines)."""
        inside = [r for r in rows if lo <= key(r) <= hi]
        if latest:
            return inside[-limit:]
        return inside[-limit:][::-1] if newest_first else inside[:limit]


class FakeBinance(FakeExchange):
    """``fapi.binance.com``: exchangeInfo, klines, markPriceKlines, fundingRate, leverageBracket.

    Funding is stamped a few ms after the hour, as Binance does; leverageBracket is signed.
    """

    HOST = "fapi.binance.com"
    PATHS = {"ohlcv": "klines", "mark": "markPriceKlines", "funding": "fundingRate", "markets": "exchangeInfo"}
    FUNDING_DELAY_MS = 7
    RATE_LIMITED = {"code": -1003, "msg": "Too many requests."}
    # developers.binance.com, USDⓈ-M Futures market data: "Kline/Candlestick Data" and "Mark Price
    # Kline/Candlestick Data": limit "Default 500; max 1500"; "Get Funding Rate History": limit
    # "Default 100; max 1000". An invalid parameter is HTTP 400 with error -1130 (Error Codes:
    # "-1130 INVALID_PARAMETER Data sent for parameter '%s' is not valid.").
    CAPS = {"klines": 1500, "markPriceKlines": 1500, "fundingRate": 1000}
    DEFAULTS = {"klines": 500, "markPriceKlines": 500, "fundingRate": 100}
    OVER_CAP = (400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."})

    def __init__(self, start: int, bars: int, **kw):
        super().__init__(start, bars, **kw)
        self.klines = [[t, o, h, lo, c, v, t + HOUR - 1, "1000.0", 100, "50.0", "500.0", "0"]
                       for t, o, h, lo, c, v in self.candles]
        self.mark = [[t, o, h, lo, c, "0", t + HOUR - 1, "0", 0, "0", "0", "0"] for t, o, h, lo, c in self.marks]
        self.funding = [{"symbol": "BTCUSDT", "fundingTime": t + self.FUNDING_DELAY_MS, "fundingRate": r,
                         "markPrice": "40000.00000000"} for t, r in self.events]
        self.info = _canned("binance-usdm", "exchangeInfo.json")
        self.brackets = _canned("binance-usdm", "leverageBracket.json")

    def answer(self, full_path, path, q, headers, broken):
        if path == "exchangeInfo":
            return self.info
        if path in ("klines", "markPriceKlines", "fundingRate"):
            rows = {"klines": self.klines, "markPriceKlines": self.mark, "fundingRate": self.funding}[path]
            key = (lambda r: r["fundingTime"]) if path == "fundingRate" else (lambda r: r[0])
            page = self._window(rows, key, int(q.get("startTime", 0)), int(q.get("endTime", FAR)),
                                int(q.get("limit", self.DEFAULTS[path])), newest_first=False)
            if broken and page:
                page = ([list(page[0][:3])] if path != "fundingRate" else
                        [{"symbol": "BTCUSDT", "fundingTime": "soon", "fundingRate": "0.0001"}] + page[1:])
            return page
        if path == "leverageBracket":
            if "signature" not in q or not headers.get("X-MBX-APIKEY"):
                return _response(full_path, 401, {"code": -2014, "msg": "API-key format invalid."})
            return self.brackets
        return None


class FakeBybit(FakeExchange):
    """``api.bybit.com`` v5: market/instruments-info, kline, mark-price-kline, funding/history,
    risk-limit. Lists come newest first; a kline request without ``end`` gets the latest candles
    at or after ``start``; funding history refuses ``startTime`` without ``endTime``."""

    HOST = "api.bybit.com"
    PATHS = {"ohlcv": "kline", "mark": "mark-price-kline", "funding": "history", "markets": "instruments-info"}
    RATE_LIMITED = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {},
                    "time": 1735689600000}
    # bybit-exchange.github.io/docs/v5: "Get Kline" and "Get Mark Price Kline": limit "[1, 1000].
    # Default: 200"; "Get Funding Rate History": limit "[1, 200]. Default: 200". Out of range:
    # retCode 10001 (v5 error codes: "Request parameter error").
    CAPS = {"kline": 1000, "mark-price-kline": 1000, "history": 200}
    DEFAULTS = {"kline": 200, "mark-price-kline": 200, "history": 200}
    OVER_CAP = (200, {"retCode": 10001, "retMsg": "Request parameter error: limit", "result": {},
                      "retExtInfo": {}, "time": 1735689600000})

    CATEGORY = "linear"
    SYMBOL = "BTCUSDT"

    def __init__(self, start: int, bars: int, **kw):
        super().__init__(start, bars, **kw)
        self.instruments = _canned("bybit", f"instruments-info-{self.CATEGORY}.json")
        self.risk_limit = _canned("bybit", f"risk-limit-{self.SYMBOL}.json")

    def _kline_row(self, row, path):
        """One v5 kline row: [start, open, high, low, close, volume, turnover]; linear: volume in
        the base coin, turnover in USDT (mark-price klines have neither)."""
        if path != "kline":
            return [str(row[0]), *row[1:]]
        return [str(row[0]), *row[1:], "1000.0"]

    @staticmethod
    def _ok(result: dict) -> dict:
        return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1735689600000}

    def answer(self, full_path, path, q, headers, broken):
        cat, sym = self.CATEGORY, self.SYMBOL
        if full_path == "/v5/market/instruments-info":
            assert q["category"] == cat, q
            if q.get("status") == "PreLaunch":
                return self._ok({"category": cat, "list": [], "nextPageCursor": ""})
            return self.instruments
        if full_path in ("/v5/market/kline", "/v5/market/mark-price-kline"):
            assert q["symbol"] == sym and q["category"] == cat and q["interval"] == "60", q
            rows = self.candles if path == "kline" else self.marks
            page = self._window(rows, lambda r: r[0], int(q.get("start", 0)), int(q.get("end", FAR)),
                                int(q.get("limit", self.DEFAULTS[path])), newest_first=True)
            page = [self._kline_row(r, path) for r in page]
            if broken and page:
                page[0] = page[0][:3]
            return self._ok({"symbol": sym, "category": cat, "list": page})
        if full_path == "/v5/market/funding/history":
            assert q["symbol"] == sym and q["category"] == cat, q
            if "startTime" in q and "endTime" not in q:
                return {"retCode": 10001, "retMsg": "Only startTime is passed, endTime is required",
                        "result": {}, "retExtInfo": {}, "time": 1735689600000}
            page = self._window(self.events, lambda r: r[0], int(q.get("startTime", 0)),
                                int(q.get("endTime", FAR)), int(q.get("limit", self.DEFAULTS[path])),
                                newest_first=True)
            page = [{"symbol": sym, "fundingRate": r, "fundingRateTimestamp": str(t)} for t, r in page]
            if broken and page:
                page[0] = {"symbol": sym, "fundingRate": "0.0001", "fundingRateTimestamp": "soon"}
            return self._ok({"category": cat, "list": page})
        if full_path == "/v5/market/risk-limit":
            assert q["symbol"] == sym and q["category"] == cat, q
            return self.risk_limit
        return None


class FakeOKX(FakeExchange):
    """``www.okx.com`` v5: public/instruments, market/history-candles,
    market/history-mark-price-candles, public/funding-rate-history, public/position-tiers.
    ``before``/``after`` bound a window exclusively; data come newest first, the latest ``limit``
    rows of the window. Position tiers (public, per instrument family and margin mode) are bounded
    in contracts with OKX's whole-contract steps (tier 1 0..2,000, tier 2 2,001..5,000); the canned
    ladder follows the one OKX announced for its BTC perpetuals ("OKX to adjust position tiers of
    perpetual swaps and futures", June 2023: 2,000 contracts at 0.40 % / 125x, 5,000 at 0.50 % /
    100x, 20,000 at 0.75 % / 66.66x, then +20,000 contracts and +0.5 % a tier)."""

    HOST = "www.okx.com"
    PATHS = {"ohlcv": "history-candles", "mark": "history-mark-price-candles",
             "funding": "funding-rate-history", "markets": "instruments"}
    RATE_LIMITED = {"code": "50011", "msg": "Too Many Requests", "data": []}
    # okx.com/docs-v5: "Get candlesticks history" and "Get mark price candlesticks history": limit
    # "The maximum is 100; The default is 100"; "Get funding rate history": "The maximum is 400;
    # The default is 400". A bad parameter: code 51000 ("Parameter {param0} error").
    CAPS = {"history-candles": 100, "history-mark-price-candles": 100, "funding-rate-history": 400}
    DEFAULTS = CAPS
    OVER_CAP = (400, {"code": "51000", "msg": "Parameter limit error", "data": []})

    INST = "BTC-USDT-SWAP"
    FAMILY = "BTC-USDT"

    def __init__(self, start: int, bars: int, **kw):
        super().__init__(start, bars, **kw)
        self.instruments = {kind: _canned("okx", f"instruments-{kind}.json") for kind in ("SWAP", "FUTURES")}
        self.position_tiers = _canned("okx", f"position-tiers-SWAP-{self.FAMILY}.json")

    def _candle_row(self, t, o, h, lo, c, v):
        """[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]: vol in contracts (ctVal 0.01 BTC),
        volCcy in BTC, volCcyQuote in USDT."""
        return [str(t), o, h, lo, c, f"{float(v) * 100:.1f}", v, f"{float(v) * float(c):.2f}", "1"]

    def _page(self, rows, q, path):
        lo = int(q.get("before", -1)) + 1
        hi = int(q.get("after", FAR)) - 1
        return self._window(rows, lambda r: r[0], lo, hi, int(q.get("limit", self.DEFAULTS[path])),
                            newest_first=True)

    def answer(self, full_path, path, q, headers, broken):
        if full_path == "/api/v5/public/instruments":
            return self.instruments[q["instType"]]
        if full_path in ("/api/v5/market/history-candles", "/api/v5/market/history-mark-price-candles"):
            assert q["instId"] == self.INST and q["bar"] == "1H", q
            if path == "history-candles":
                page = [self._candle_row(*row) for row in self._page(self.candles, q, path)]
            else:
                page = [[str(t), o, h, lo, c, "1"] for t, o, h, lo, c in self._page(self.marks, q, path)]
            if broken and page:
                page[0] = page[0][:3]
            return {"code": "0", "msg": "", "data": page}
        if full_path == "/api/v5/public/position-tiers":
            assert q["instType"] == "SWAP" and q["instFamily"] == self.FAMILY and q["tdMode"] in ("cross", "isolated"), q
            return self.position_tiers
        if full_path == "/api/v5/public/funding-rate-history":
            assert q["instId"] == self.INST, q
            page = [{"formulaType": "noRate", "fundingRate": r, "fundingTime": str(t), "instId": self.INST,
                     "instType": "SWAP", "method": "current_period", "realizedRate": r}
                    for t, r in self._page(self.events, q, path)]
            if broken and page:
                page[0] = dict(page[0], fundingTime="soon")
            return {"code": "0", "msg": "", "data": page}
        return None


# --- coin-margined (inverse) venues ---------------------------------------------------------------
# The same market history, quoted in USD; volumes as each API writes them for inverse contracts
# (contracts of USD, and the coin). ccxt stores the coin's column as the volume, so the expected
# volume is the generated one (in the coin) on every venue.

class FakeBinanceCoinM(FakeBinance):
    """``dapi.binance.com`` (Binance COIN-M): exchangeInfo, klines, markPriceKlines, fundingRate
    (/dapi/v1), leverageBracket (/dapi/v2, signed; brackets in the coin: qtyFloor, qtyCap).

    developers.binance.com, COIN-M Futures market data, "Kline/Candlestick Data" and "Mark Price
    Kline/Candlestick Data": limit "Default 500; max 1500"; "The difference between startTime and
    endTime can only be up to 200 days"; "Between startTime and endTime, the most recent limit data
    from endTime will be returned". Kline rows: open time, open, high, low, close, volume (in
    contracts), close time, base asset volume (the coin), trades, taker buy volume, taker buy base
    asset volume, ignore. "Get Funding Rate History of Perpetual Futures" (GET /dapi/v1/fundingRate):
    limit "Default 100; max 1000"; rows {symbol, fundingTime, fundingRate}. A span over 200 days is
    refused; the docs do not give that error's text, so the fake answers Binance's generic
    -1130 ("Data sent for parameter '%s' is not valid.") for it.
    """

    HOST = "dapi.binance.com"
    CAPS = {"klines": 1500, "markPriceKlines": 1500, "fundingRate": 1000}
    DEFAULTS = {"klines": 500, "markPriceKlines": 500, "fundingRate": 100}
    MAX_SPAN_MS = 200 * 24 * HOUR
    SYMBOL = "BTCUSD_PERP"
    CONTRACT_USD = 100

    def __init__(self, start: int, bars: int, **kw):
        super().__init__(start, bars, **kw)
        self.klines = [[t, o, h, lo, c, str(round(float(v) * float(c) / self.CONTRACT_USD)), t + HOUR - 1, v, 100,
                        "50", f"{float(v) / 2:.3f}", "0"] for t, o, h, lo, c, v in self.candles]
        self.funding = [{"symbol": self.SYMBOL, "fundingTime": t + self.FUNDING_DELAY_MS, "fundingRate": r}
                        for t, r in self.events]
        self.info = _canned("binance-coinm", "exchangeInfo.json")
        self.brackets = _canned("binance-coinm", "leverageBracket.json")

    def answer(self, full_path, path, q, headers, broken):
        if path == "leverageBracket":
            assert full_path == "/dapi/v2/leverageBracket", full_path
        elif path != "exchangeInfo":
            assert full_path.startswith("/dapi/v1/") and q.get("symbol") == self.SYMBOL, (full_path, q)
        if path in ("klines", "markPriceKlines"):
            lo, hi = int(q.get("startTime", 0)), int(q.get("endTime", FAR))
            if hi - lo > self.MAX_SPAN_MS:
                return _response(full_path, 400, {"code": -1130, "msg": "Data sent for parameter 'endTime' is not valid."})
            rows = self.klines if path == "klines" else self.mark
            page = self._window(rows, lambda r: r[0], lo, hi, int(q.get("limit", self.DEFAULTS[path])),
                                newest_first=False, latest=True)
            if broken and page:
                page = [list(page[0][:3])]
            return page
        return super().answer(full_path, path, q, headers, broken)


class FakeBybitInverse(FakeBybit):
    """``api.bybit.com`` v5 with ``category=inverse`` (BTCUSD: 1 USD a contract). "Get Kline":
    volume in contracts (USD) for inverse contracts, turnover in the coin; page sizes as linear.
    Risk limits of BTCUSD in the coin (riskLimitValue, mmDeduction): the classic ladder of Bybit's
    inverse BTCUSD (150 BTC at 100x, +150 BTC and +0.5 % maintenance a step), mmDeduction derived
    as Bybit derives it. "Get Risk Limit" (v5) takes BTCUSD/inverse as its request example; a copy
    of its response example (in the bybit-rust-api crate) shows that first step, 150 at 100x, with
    the rates written "0.5" and "1"; the canned answer writes them as fractions, as the linear
    answers do and as ccxt reads them (maintenanceMargin → maintenanceMarginRate)."""

    CATEGORY = "inverse"
    SYMBOL = "BTCUSD"

    def _kline_row(self, row, path):
        if path != "kline":
            return [str(row[0]), *row[1:]]
        t, o, h, lo, c, v = row
        return [str(t), o, h, lo, c, str(round(float(v) * float(c))), v]


class FakeOKXInverse(FakeOKX):
    """``www.okx.com`` v5, the coin-margined swap BTC-USD-SWAP (instType SWAP, ctType inverse,
    ctVal 100 USD): candles with vol in contracts, volCcy in BTC, volCcyQuote in USD. Position tiers
    of family BTC-USD bounded in contracts; the ladder's values are illustrative (the shape and the
    whole-contract steps are OKX's, the figures are not a table OKX published)."""

    INST = "BTC-USD-SWAP"
    FAMILY = "BTC-USD"

    def _candle_row(self, t, o, h, lo, c, v):
        usd = float(v) * float(c)
        return [str(t), o, h, lo, c, str(round(usd / 100)), v, f"{usd:.2f}", "1"]


FAKES = {"binance-usdm": FakeBinance, "bybit": FakeBybit, "okx": FakeOKX,
         "binance-coinm": FakeBinanceCoinM, "bybit-inverse": FakeBybitInverse, "okx-inverse": FakeOKXInverse}
