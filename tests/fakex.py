"""Exchanges' HTTP APIs, canned: ccxt talks to these instead of the network.

Each fake replaces a ccxt client's ``session`` (the ``requests`` layer ccxt's ``fetch`` calls), so
ccxt's own request building, response parsing and HTTP error mapping (429, 5xx) run as in
production. Responses have the real APIs' shapes (field names, strings for decimals, paging by
``startTime``/``limit``); series are generated deterministically. A URL the fake does not know fails
the test.
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


class _Cookies:
    def clear(self):
        pass


def _response(url: str, status: int, payload) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = url
    r.reason = {200: "OK", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable",
                400: "Bad Request"}.get(status, "")
    r.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    r._content = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    return r


class FakeBinance:
    """``fapi.binance.com``: exchangeInfo, klines, markPriceKlines, fundingRate, leverageBracket.

    ``bars`` hourly candles from ``start`` (ms); ``missing`` bar indices the exchange does not have
    (real gaps); funding every ``funding_hours`` hours, a few ms after the hour as Binance stamps it.
    ``fail`` queues HTTP statuses to answer instead, per path: ``{"klines": [429, 503]}``;
    ``down_after`` answers 503 to every call of a path after the first n.
    """

    def __init__(self, start: int, bars: int, *, missing=(), funding_hours: int = 8, seed: int = 3):
        rng = np.random.default_rng(seed)
        close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
        open_ = np.r_[40_000.0, close[:-1]]
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, bars)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, bars)))
        keep = np.setdiff1d(np.arange(bars), np.asarray(missing, dtype=int))
        t = start + np.arange(bars, dtype=np.int64) * HOUR
        self.klines = [[int(t[i]), f"{open_[i]:.2f}", f"{high[i]:.2f}", f"{low[i]:.2f}", f"{close[i]:.2f}",
                        f"{rng.uniform(100, 900):.3f}", int(t[i] + HOUR - 1), "1000.0", 100, "50.0", "500.0", "0"]
                       for i in keep]
        basis = 1 + rng.normal(0, 0.0003, bars)
        self.mark = [[int(t[i]), f"{open_[i] * basis[i]:.8f}", f"{high[i] * basis[i]:.8f}",
                      f"{low[i] * basis[i]:.8f}", f"{close[i] * basis[i]:.8f}", "0", int(t[i] + HOUR - 1),
                      "0", 0, "0", "0", "0"] for i in keep]
        hours = [i for i in range(bars) if i % funding_hours == 0]
        self.funding = [{"symbol": "BTCUSDT", "fundingTime": int(t[i]) + 7, "fundingRate": f"{rng.normal(1e-4, 1e-4):.8f}",
                         "markPrice": f"{close[i]:.8f}"} for i in hours]
        self.info = json.loads((CANNED / "binance-usdm" / "exchangeInfo.json").read_text())
        self.brackets = json.loads((CANNED / "binance-usdm" / "leverageBracket.json").read_text())
        self.fail: dict[str, list[int]] = {}
        self.malformed: dict[str, int] = {}      # path -> call number whose page is broken
        self.down_after: dict[str, int] = {}     # path -> calls answered before it goes down (503)
        self.calls: list[str] = []
        self.cookies = _Cookies()
        self.headers: dict[str, str] = {}

    def attach(self, client):
        client.session = self
        return client

    def request(self, method, url, data=None, headers=None, **_):
        parsed = urlparse(url)
        path = parsed.path.rsplit("/", 1)[-1]
        q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        self.calls.append(path)
        if path in self.down_after and self.calls.count(path) > self.down_after[path]:
            return _response(url, 503, "<html><body>503 Service Temporarily Unavailable</body></html>")
        if self.fail.get(path):
            return _response(url, self.fail[path].pop(0), {"code": -1003, "msg": "Too many requests."})
        if parsed.netloc != "fapi.binance.com":
            raise AssertionError(f"unexpected host in {url}")
        if path == "exchangeInfo":
            return _response(url, 200, self.info)
        if path in ("klines", "markPriceKlines", "fundingRate"):
            rows = {"klines": self.klines, "markPriceKlines": self.mark, "fundingRate": self.funding}[path]
            key = (lambda r: r["fundingTime"]) if path == "fundingRate" else (lambda r: r[0])
            cap = 1000 if path == "fundingRate" else 1500
            limit = min(int(q.get("limit", 500)), cap)
            lo = int(q.get("startTime", 0))
            hi = int(q.get("endTime", 2**62))
            page = [r for r in rows if lo <= key(r) <= hi][:limit]
            n = sum(1 for c in self.calls if c == path)
            if self.malformed.get(path) == n and page:
                page = ([list(page[0][:3])] if path != "fundingRate" else
                        [{"symbol": "BTCUSDT", "fundingTime": "soon", "fundingRate": "0.0001"}] + page[1:])
            return _response(url, 200, page)
        if path == "leverageBracket":
            if "signature" not in q or not (headers or {}).get("X-MBX-APIKEY"):
                return _response(url, 401, {"code": -2014, "msg": "API-key format invalid."})
            return _response(url, 200, self.brackets)
        raise AssertionError(f"unexpected URL {url}")
