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


def to_inverse(symbol: str, field: str = "symbol") -> str:
    """A coin-margined symbol: ``BTCUSD``, ``BTCUSD_PERP``, ``BTC-USD-SWAP``, ``BTC``,
    ``BTC/USD:BTC`` → ``BTC/USD:BTC`` (quoted in USD, settled in the coin)."""
    raw = symbol.strip().upper()
    match = _UNIFIED.match(raw)
    if match:
        base, quote, settle = match["base"], match["quote"], match["settle"] or match["base"]
    else:
        text = _PERPETUAL_SUFFIX.sub("", raw).replace("-", "").replace("_", "")
        quote = next((q for q in QUOTES if text.endswith(q) and len(text) > len(q)), None)
        base = text[: -len(quote)] if quote else text
        quote, settle = quote or "USD", base
        if not (base.isalnum() and base):
            raise InputError(f"cannot read symbol {symbol!r}; write it as BTCUSD or BTC/USD:BTC", field=field)
    if quote != "USD" or settle != base:
        raise InputError(f"{symbol!r} is not coin-margined; coin-margined symbols are quoted in USD "
                         f"and settled in the coin: BTCUSD, BTC/USD:BTC", field=field)
    return f"{base}/USD:{base}"


def to_exchange(symbol: str) -> str:
    """``BTC/USDT:USDT`` → ``BTCUSDT`` (the spelling of file and folder names)."""
    match = _UNIFIED.match(symbol.strip().upper())
    if not match:
        return symbol.strip().upper()
    return f"{match['base']}{match['quote']}"
