"""Tier-history files: ``datasets/<exchange>/tier_history.json``.

Shape (ccxt's tier rows with the maintenance amount as ``cum``)::

    {"exchange": "binance-usdm", "source": "...",
     "symbols": {"BTC/USDT:USDT": [{"observed": "2022-02-05", "tiers": [{"tier": 1, ...}]}]}}

A snapshot may also hold ``upper_inclusive`` (true), ``amounts`` (false) and ``contract_value``:
OKX's tables, bounded in base units (contracts × ``contract_value``), each tier holding its own
``maxNotional``, with no maintenance amounts (:meth:`btperp.tiers.TierTable.from_okx`).

Reading is lazy: a symbol's snapshots are parsed and validated when first asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import TierTableError
from ..symbols import to_unified
from ..tiers import TierHistory
from .atomic import atomic_open
from .paths import tier_history_path


class TierHistoryFile:
    """The tier histories of one exchange, read from a file (or a dict of the same shape)."""

    def __init__(self, data: Mapping[str, Any], *, path: "str | os.PathLike[str] | None" = None):
        self.path = str(path) if path else "<tier history>"
        if isinstance(data, list):
            raise TierTableError("a JSON list (a ccxt tier list for one symbol?); expected btperp's "
                                 "tier-history object {'symbols': {SYMBOL: [{'observed': DATE, "
                                 "'tiers': [...]}]}}. One ccxt table goes to `btperp calc --tiers FILE`",
                                 source=self.path)
        if not isinstance(data, Mapping):
            raise TierTableError(f"a JSON {type(data).__name__}; expected btperp's tier-history object "
                                 "{'symbols': {SYMBOL: [{'observed': DATE, 'tiers': [...]}]}}",
                                 source=self.path)
        symbols = data.get("symbols")
        if not isinstance(symbols, Mapping):
            raise TierTableError("no 'symbols' object", source=self.path)
        self.exchange = data.get("exchange")
        self.source = data.get("source")
        self._raw = symbols
        self._cache: dict[str, TierHistory] = {}

    @classmethod
    def read(cls, path: "str | os.PathLike[str]") -> "TierHistoryFile":
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise TierTableError(f"not valid JSON: {exc}", source=str(path)) from None
        except UnicodeDecodeError as exc:
            raise TierTableError(f"not UTF-8 text (a JSON file is): {exc.reason} at byte {exc.start}",
                                 source=str(path)) from None
        except IsADirectoryError:
            raise TierTableError("is a folder; expected a tier-history JSON file", source=str(path)) from None
        return cls(data, path=path)

    @classmethod
    def bundled(cls, exchange: str, root: "str | os.PathLike[str] | None" = None) -> "TierHistoryFile | None":
        """The exchange's file under the datasets root, or None if there is none."""
        path = tier_history_path(exchange, root)
        return cls.read(path) if path.is_file() else None

    def symbols(self) -> list[str]:
        return sorted(self._raw)

    def history(self, symbol: str, settle: str = "USDT") -> TierHistory | None:
        """The symbol's history (``BTCUSDT`` or ``BTC/USDT:USDT``), or None if the file lacks it."""
        key = symbol if symbol in self._raw else to_unified(symbol, settle)
        if key not in self._raw:
            return None
        if key not in self._cache:
            if not isinstance(self._raw[key], list):
                raise TierTableError(f"expected a list of snapshots [{{'observed': DATE, 'tiers': [...]}}], "
                                     f"got a JSON {type(self._raw[key]).__name__}", source=f"{self.path}: {key}")
            self._cache[key] = TierHistory.from_snapshots(self._raw[key], symbol=key,
                                                          source=f"{self.path}: {key}")
        return self._cache[key]

    def histories(self) -> dict[str, TierHistory]:
        """Every symbol's history, parsed and validated."""
        return {s: self.history(s) for s in self.symbols()}


def write_tier_histories(path: "str | os.PathLike[str]", histories: Mapping[str, TierHistory], *,
                         exchange: str, source: str) -> Path:
    """Write histories in btperp's shape, atomically. Returns the path."""
    payload = {"exchange": exchange, "source": source,
               "symbols": {s: histories[s].to_snapshots() for s in sorted(histories)}}
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
        handle.write("\n")
    return Path(path)


def import_tier_history(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", *,
                        exchange: str) -> dict[str, int]:
    """Validate every table of a tier-history file and write it in btperp's shape.

    Returns counts (``symbols``, ``tables``). A table that fails validation stops the import
    with an error naming the symbol, snapshot, tier and field; nothing is written then.
    """
    source_file = TierHistoryFile.read(src)
    histories = source_file.histories()
    provenance = source_file.source or f"imported from {Path(src).name}"
    write_tier_histories(dst, histories, exchange=exchange, source=provenance)
    return {"symbols": len(histories), "tables": sum(len(h.versions) for h in histories.values())}
