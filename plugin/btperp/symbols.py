"""Symbol spellings: exchange form (``BTCUSDT``) and ccxt's unified form (``BTC/USDT:USDT``)."""

from __future__ import annotations

import re

from .errors import InputError

#: Quote currencies recognised at the end of an exchange-form symbol, longest first.
QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "USD")

#: The perpetual's suffix in OKX's (``BTC-USDT-SWAP``) and Binance COIN-M's (``BTCUSD_PERP``) ids.
_PERPETUAL_SUFFIX = re.compile(r"[-_](SWAP|PERP)$")

_UNIFIED = re.compile(r"^(?P<base>[A-Z0-9]+)/(?P<quote>[A-Z0-9]+)(?::(?P<settle>[A-Z0-9]+))?$")


def to_unified(symbol: str, settle: str = "USDT") -> str:
    """``BTCUSDT``, ``btc/usdt``, ``BTC/USDT:USDT``, OKX's ``BTC-USDT-SWAP`` → ``BTC/USDT:USDT``
    (a linear perpetual).

    A bare base (``BTC``, as Hyperliquid names coins) gets ``settle`` as its quote.
    """
    text = _PERPETUAL_SUFFIX.sub("", symbol.strip().upper()).replace("-", "").replace("_", "")
    match = _UNIFIED.match(text)
    if match:
        base, quote = match["base"], match["quote"]
        return f"{base}/{quote}:{match['settle'] or quote}"
    for quote in QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            base = text[: -len(quote)]
            return f"{base}/{quote}:{quote}"
    if text.isalnum() and text:
        return f"{text}/{settle}:{settle}"
    raise InputError(f"cannot read symbol {symbol!r}; write it as BTCUSDT or BTC/USDT:USDT",
                     field="symbol")


def to_exchange(symbol: str) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT`` (the spelling of file and folder names)."""
    match = _UNIFIED.match(symbol.strip().upper())
    if not match:
        return symbol.strip().upper()
    return f"{match['base']}{match['quote']}"
