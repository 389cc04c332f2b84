"""Exchange rulebooks: one class per exchange, all with the same methods (see :mod:`.base`)."""

from __future__ import annotations

from ..errors import UnknownExchangeError
from .base import Rulebook
from .binance import BinanceUSDM
from .bybit import BybitLinear
from .hyperliquid import Hyperliquid

RULEBOOKS: dict[str, type[Rulebook]] = {cls.name: cls for cls in (BinanceUSDM, BybitLinear, Hyperliquid)}
_ALIASES = {"binance": "binance-usdm", "binanceusdm": "binance-usdm", "binance_usdm": "binance-usdm",
            "bybit-linear": "bybit"}


def get_rulebook(exchange: "str | Rulebook") -> Rulebook:
    """The rulebook of ``exchange`` (``binance-usdm``, ``bybit``, ``hyperliquid``, or a Rulebook)."""
    if isinstance(exchange, Rulebook):
        return exchange
    key = str(exchange).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in RULEBOOKS:
        raise UnknownExchangeError(f"unknown exchange {exchange!r}; choose one of "
                                   f"{', '.join(sorted(RULEBOOKS))}", field="exchange")
    return RULEBOOKS[key]()


__all__ = ["Rulebook", "BinanceUSDM", "BybitLinear", "Hyperliquid", "RULEBOOKS", "get_rulebook"]
