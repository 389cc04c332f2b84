"""Exchange rulebooks: one class per exchange, all with the same methods (see :mod:`.base`)."""

from __future__ import annotations

from ..errors import UnknownExchangeError
from .base import PartialRule, Rulebook
from .binance import BinanceCoinM, BinanceUSDM
from .bybit import BybitInverse, BybitLinear
from .generic import Generic
from .hyperliquid import Hyperliquid
from .okx import OKXInverse, OKXLinear

#: The rulebooks of the whole stack: broker, replay, audit, backtests and calc.
RULEBOOKS: dict[str, type[Rulebook]] = {cls.name: cls for cls in (BinanceUSDM, BybitLinear, Hyperliquid)}
#: Rulebooks modelled in the margin core and ``btperp calc`` only so far (not the broker, the
#: replay or the audit): OKX, the generic approximation; and the coin-margined (inverse) rulebooks,
#: which the broker (``btperp.install``) and ``audit position`` also take (:data:`INVERSE_RULEBOOKS`).
CORE_RULEBOOKS: dict[str, type[Rulebook]] = {cls.name: cls for cls in (OKXLinear, Generic, BinanceCoinM,
                                                                        BybitInverse, OKXInverse)}
#: Coin-margined rulebooks: margin core, calc, the broker and ``audit position`` (``inverse=True``);
#: OKX's stays in the core and calc like OKX's linear one (its tiers follow the contracts).
INVERSE_RULEBOOKS = frozenset(name for name, cls in CORE_RULEBOOKS.items()
                              if cls.inverse and name != OKXInverse.name)
_ALIASES = {"binance": "binance-usdm", "binanceusdm": "binance-usdm", "binance_usdm": "binance-usdm",
            "bybit-linear": "bybit", "okx-linear": "okx", "okx-usdt": "okx",
            "binancecoinm": "binance-coinm", "binance_coinm": "binance-coinm", "coinm": "binance-coinm"}


def get_rulebook(exchange: "str | Rulebook", *, core: bool = False, inverse: bool = False) -> Rulebook:
    """The rulebook of ``exchange`` (``binance-usdm``, ``bybit``, ``hyperliquid``, or a Rulebook).

    ``core=True`` also gives the rulebooks only the margin core and ``btperp calc`` model
    (:data:`CORE_RULEBOOKS`: ``okx``, ``generic``, ``binance-coinm``, ``bybit-inverse``); without
    it naming one is an error saying so. ``inverse=True`` (the broker, ``audit position``) also
    gives the coin-margined rulebooks (:data:`INVERSE_RULEBOOKS`).
    """
    if isinstance(exchange, Rulebook):
        return exchange
    key = str(exchange).strip().lower()
    key = _ALIASES.get(key, key)
    if key in RULEBOOKS:
        return RULEBOOKS[key]()
    if key in CORE_RULEBOOKS:
        if core or (inverse and key in INVERSE_RULEBOOKS):
            return CORE_RULEBOOKS[key]()
        if key in INVERSE_RULEBOOKS:
            raise UnknownExchangeError(f"{key} (coin-margined) is modelled in the margin core, `btperp "
                                       f"calc`, backtests from Python (btperp.install) and `btperp audit "
                                       f"position` only so far; here choose one of "
                                       f"{', '.join(sorted(RULEBOOKS))}", field="exchange")
        raise UnknownExchangeError(f"{key} is modelled in the margin core and `btperp calc` only so far, "
                                   f"not in backtests, replays or audits; choose one of "
                                   f"{', '.join(sorted(RULEBOOKS))}", field="exchange")
    known = sorted(RULEBOOKS) + (sorted(CORE_RULEBOOKS) if core else [])
    raise UnknownExchangeError(f"unknown exchange {exchange!r}; choose one of {', '.join(known)}",
                               field="exchange")


__all__ = ["Rulebook", "PartialRule", "BinanceUSDM", "BinanceCoinM", "BybitLinear", "BybitInverse",
           "Hyperliquid", "OKXLinear", "OKXInverse", "Generic", "RULEBOOKS",
           "CORE_RULEBOOKS", "INVERSE_RULEBOOKS", "get_rulebook"]
