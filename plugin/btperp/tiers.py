"""Leverage tiers (brackets, risk limits): which maintenance rate and amount apply to a notional.

Pure core: no I/O, no backtrader. Tables speak ccxt's unified leverage-tier structure at their
edges (``tier``, ``minNotional``, ``maxNotional``, ``maintenanceMarginRate``, ``maxLeverage``,
``info``), with the maintenance amount taken from ``info.cum`` (Binance), ``info.mmDeduction``
(Bybit) or a top-level ``cum`` (btperp's own files), and derived where it is missing.

Maintenance amount (Binance "Leverage and Margin of USDⓈ-M Futures", maintenance amount formula;
Bybit "Maintenance Margin (USDT Contract)", mmDeduction):

    cum_1 = 0,   cum_n = cum_(n-1) + minNotional_n * (mmr_n - mmr_(n-1))

which makes ``notional * mmr - cum`` continuous at every tier boundary.

OKX (:meth:`TierTable.from_okx`) bounds its tiers by position size in contracts, ``minSz`` to
``maxSz`` inclusive, and publishes no maintenance amount ("Tiered maintenance margin ratio rules":
maintenance margin = position value × the tier's rate). Its tables are kept in base units
(contracts × the contract value ``ctVal``), a tier holding every size above the previous tier's
``maxSz`` up to and including its own (``upper_inclusive``), with no maintenance amounts.
"""

from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import (EarliestTableAssumed, InputError, TierAmountError, TierGapError, TierLeverageError,
                     TierOrderError, TierOverlapError, TierRateError, TierTableError,
                     TierValueError, outside_stacklevel)

#: Relative and absolute tolerance for comparing a published maintenance amount to its derivation.
#: Exchanges publish amounts rounded to their quote precision; 1e-6 USDT absolute is far below it.
AMOUNT_RTOL = 1e-9
AMOUNT_ATOL = 1e-6


@dataclass(frozen=True)
class Tier:
    """One leverage tier: a notional range and the margin rules that apply inside it."""

    tier: int
    """1-based tier number."""
    min_notional: float
    """Lowest notional of the tier, USDT (inclusive)."""
    max_notional: float
    """Highest notional of the tier, USDT (exclusive except for the last tier); ``inf`` if open."""
    maintenance_margin_rate: float
    """Maintenance margin rate as a fraction (0.004 = 0.4 %)."""
    max_leverage: float
    """Highest leverage allowed for a position whose notional is in this tier."""
    maintenance_amount: float
    """Maintenance amount (Binance ``cum``, Bybit ``mmDeduction``), USDT."""
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The raw exchange answer the tier came from, if any."""

    def to_ccxt(self) -> dict:
        """This tier in ccxt's leverage-tier shape, with ``cum`` at the top level."""
        return {"tier": self.tier, "minNotional": self.min_notional,
                "maxNotional": None if math.isinf(self.max_notional) else self.max_notional,
                "maintenanceMarginRate": self.maintenance_margin_rate,
                "maxLeverage": self.max_leverage, "cum": self.maintenance_amount}


def derive_maintenance_amounts(min_notionals: Sequence[float], rates: Sequence[float]) -> list[float]:
    """Maintenance amount of each tier from the tier floors and rates (formula in the module doc)."""
    amounts = [0.0]
    for n in range(1, len(rates)):
        amounts.append(amounts[-1] + min_notionals[n] * (rates[n] - rates[n - 1]))
    return amounts


def contracts_to_base(contracts: float, contract_value: float) -> float:
    """Contracts × contract value in base units, to 15 significant digits so that a table bound
    and a position of the same number of contracts are the same float (0.01 × 2001 would be
    20.009999999999998)."""
    return float(f"{float(contracts) * float(contract_value):.15g}")


def _number(raw: Mapping[str, Any], key: str, tier: int, source: str | None,
            *, allow_none: bool = False) -> float | None:
    value = raw.get(key)
    if value is None or value == "":
        if allow_none:
            return None
        raise TierValueError("missing", tier=tier, field=key, source=source)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TierValueError(f"not a number: {value!r}", tier=tier, field=key, source=source) from None
    if math.isnan(number):
        raise TierValueError("NaN", tier=tier, field=key, source=source)
    if number < 0:
        raise TierValueError(f"negative: {number}", tier=tier, field=key, source=source)
    return number


def _published_amount(raw: Mapping[str, Any], tier: int, source: str | None) -> float | None:
    """The maintenance amount an exchange published for a tier, wherever ccxt or btperp put it."""
    if raw.get("cum") not in (None, ""):
        return _number(raw, "cum", tier, source)
    info = raw.get("info") or {}
    for key in ("cum", "mmDeduction"):
        if info.get(key) not in (None, ""):
            return _number(info, key, tier, source)
    return None


class TierTable:
    """An exchange's leverage tiers for one symbol, validated, with lookup by notional.

    Build one with :meth:`from_ccxt` (ccxt's structure, btperp's files),
    :meth:`from_binance_brackets` (Binance's raw ``/fapi/v1/leverageBracket`` answer) or
    :meth:`single` (one open-ended tier from an explicit rate and amount).
    """

    __slots__ = ("tiers", "symbol", "source", "upper_inclusive", "amounts", "contract_value",
                 "_floors", "_rates", "_amounts")

    def __init__(self, tiers: Iterable[Tier], *, symbol: str | None = None, source: str | None = None,
                 check_amounts: bool = True, upper_inclusive: bool = False, amounts: bool = True,
                 contract_value: float | None = None):
        self.tiers: tuple[Tier, ...] = tuple(tiers)
        self.symbol = symbol
        self.source = source or symbol
        self.upper_inclusive = bool(upper_inclusive)
        """A tier holds its ``maxNotional`` (OKX: ``minSz``..``maxSz`` inclusive); else ``[min, max)``."""
        self.amounts = bool(amounts)
        """False when the exchange has no maintenance amount (OKX): every amount is 0."""
        self.contract_value = None if contract_value is None else float(contract_value)
        """Base units per contract (OKX ``ctVal``) when the exchange bounded the tiers in contracts."""
        if not self.amounts and any(t.maintenance_amount for t in self.tiers):
            raise TierTableError("a table without maintenance amounts has a non-zero amount",
                                 source=self.source)
        self._validate(check_amounts and self.amounts)
        self._floors = np.array([t.min_notional for t in self.tiers])
        self._rates = np.array([t.maintenance_margin_rate for t in self.tiers])
        self._amounts = np.array([t.maintenance_amount for t in self.tiers])

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_ccxt(cls, rows: Sequence[Mapping[str, Any]], *, symbol: str | None = None,
                  source: str | None = None, upper_inclusive: bool = False, amounts: bool = True,
                  contract_value: float | None = None) -> "TierTable":
        """From ccxt's ``fetch_leverage_tiers()[symbol]`` list (or btperp's stored tiers).

        The maintenance amount comes from ``cum``, ``info.cum`` or ``info.mmDeduction`` where
        published (and must then agree with its derivation), and is derived otherwise; with
        ``amounts=False`` (OKX) every amount is 0. ``upper_inclusive`` and ``contract_value``: see
        :meth:`from_okx`.
        """
        source = source or symbol
        if isinstance(rows, Mapping) or isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TierTableError(f"expected a list of tiers, got a JSON {type(rows).__name__}", source=source)
        if not rows:
            raise TierTableError("the table has no tiers", source=source)
        parsed = []
        published: list[float | None] = []
        for position, raw in enumerate(rows, start=1):
            if not isinstance(raw, Mapping):
                raise TierValueError(f"expected an object with minNotional, maxNotional, "
                                     f"maintenanceMarginRate and maxLeverage, got {raw!r:.60}",
                                     tier=position, source=source)
            number = raw.get("tier", position)
            try:
                number = int(float(number))
            except (TypeError, ValueError):
                raise TierValueError(f"not a tier number: {number!r}", tier=position, field="tier",
                                     source=source) from None
            lo = _number(raw, "minNotional", number, source)
            hi = _number(raw, "maxNotional", number, source, allow_none=True)
            rate = _number(raw, "maintenanceMarginRate", number, source)
            lev = _number(raw, "maxLeverage", number, source)
            parsed.append((number, lo, math.inf if hi is None else hi, rate, lev,
                           raw.get("info") or {}))
            published.append(_published_amount(raw, number, source))
        derived = derive_maintenance_amounts([p[1] for p in parsed], [p[3] for p in parsed])
        if not amounts:
            derived, published = [0.0] * len(parsed), [None] * len(parsed)
        tiers = []
        for (number, lo, hi, rate, lev, info), pub, der in zip(parsed, published, derived):
            tiers.append(Tier(number, lo, hi, rate, lev, der if pub is None else pub, info))
        return cls(tiers, symbol=symbol, source=source, upper_inclusive=upper_inclusive,
                   amounts=amounts, contract_value=contract_value)

    @classmethod
    def from_okx(cls, rows: Sequence[Mapping[str, Any]], contract_value: float, *,
                 symbol: str | None = None, source: str | None = None) -> "TierTable":
        """From OKX's ``GET /api/v5/public/position-tiers`` rows (``tier``, ``minSz``, ``maxSz``,
        ``mmr``, ``maxLever``) of one instrument and its contract value ``ctVal``.

        OKX bounds tiers by position size in contracts ("Tiered maintenance margin ratio rules"),
        written with whole contracts: tier 1 is 0..2,000, tier 2 2,001..5,000 (``minSz`` = previous
        ``maxSz`` + 1). The rule closing that gap: tier k holds every size *above* tier k−1's
        ``maxSz`` up to and including its own. With whole-contract lots nothing lies between 2,000
        and 2,001; where lots are fractional (BTC-USDT-SWAP: ``lotSz`` 0.01) a position of 2,000.5
        contracts exceeds tier 1's maximum, so it is in tier 2. The bounds are converted to base
        units (contracts × ``ctVal``: 2,000 × 0.01 = 20 BTC); OKX has no maintenance amount.
        A ``minSz`` more than one contract above the previous ``maxSz`` is a :class:`TierGapError`,
        one below it a :class:`TierOverlapError`.
        """
        source = source or symbol
        cv = _number({"ctVal": contract_value}, "ctVal", 1, source)
        if not cv > 0 or math.isinf(cv):
            raise TierValueError(f"the contract value must be a positive number, got {contract_value!r}",
                                 tier=1, field="ctVal", source=source)
        if isinstance(rows, (Mapping, str, bytes)) or not isinstance(rows, Sequence):
            raise TierTableError(f"expected a list of OKX position tiers, got a JSON "
                                 f"{type(rows).__name__}", source=source)
        if not rows:
            raise TierTableError("the table has no tiers", source=source)
        out, previous_max = [], None
        for position, raw in enumerate(rows, start=1):
            if not isinstance(raw, Mapping):
                raise TierValueError(f"expected an OKX tier object (minSz, maxSz, mmr, maxLever), got "
                                     f"{raw!r:.60}", tier=position, source=source)
            number = raw.get("tier", position)
            lo = _number(raw, "minSz", position, source)
            hi = _number(raw, "maxSz", position, source, allow_none=True)
            rate = _number(raw, "mmr", position, source)
            lev = _number(raw, "maxLever", position, source)
            if previous_max is None:
                if lo != 0:
                    raise TierGapError(f"the first tier starts at {lo:g} contracts, not 0", tier=position,
                                       field="minSz", source=source)
            elif lo < previous_max:
                raise TierOverlapError(f"minSz {lo:g} overlaps the previous tier, whose maxSz is "
                                       f"{previous_max:g} contracts", tier=position, field="minSz",
                                       source=source)
            elif lo > previous_max + 1:
                raise TierGapError(f"minSz {lo:g} leaves a gap of {lo - previous_max - 1:g} contracts "
                                   f"after the previous tier's maxSz {previous_max:g} (OKX's tiers follow "
                                   f"one another by one contract)", tier=position, field="minSz",
                                   source=source)
            floor = 0.0 if previous_max is None else contracts_to_base(previous_max, cv)
            out.append({"tier": number, "minNotional": floor,
                        "maxNotional": None if hi is None else contracts_to_base(hi, cv),
                        "maintenanceMarginRate": rate, "maxLeverage": lev,
                        "info": {k: raw[k] for k in ("minSz", "maxSz", "imr") if k in raw}})
            previous_max = math.inf if hi is None else hi
        return cls.from_ccxt(out, symbol=symbol, source=source, upper_inclusive=True, amounts=False,
                             contract_value=cv)

    @classmethod
    def from_binance_brackets(cls, answer: Any, *, symbol: str | None = None,
                              source: str | None = None) -> "TierTable":
        """From Binance's raw ``GET /fapi/v1/leverageBracket`` answer.

        ``answer`` is one ``{"symbol": ..., "brackets": [...]}`` object or the list of them (then
        ``symbol``, in Binance's spelling such as ``BTCUSDT``, picks one).
        """
        if isinstance(answer, list):
            matches = [a for a in answer if symbol is None or a.get("symbol") == symbol]
            if len(matches) != 1:
                raise TierTableError(f"expected one bracket set for symbol {symbol!r}, "
                                     f"found {len(matches)}", source=source)
            answer = matches[0]
        brackets = answer.get("brackets")
        if not brackets:
            raise TierTableError("no 'brackets' in the answer", source=source)
        rows = [{"tier": b.get("bracket"), "minNotional": b.get("notionalFloor"),
                 "maxNotional": b.get("notionalCap"), "maintenanceMarginRate": b.get("maintMarginRatio"),
                 "maxLeverage": b.get("initialLeverage"), "info": b} for b in brackets]
        return cls.from_ccxt(rows, symbol=symbol or answer.get("symbol"), source=source)

    @classmethod
    def single(cls, maintenance_margin_rate: float, maintenance_amount: float = 0.0,
               max_leverage: float = math.inf, *, symbol: str | None = None,
               source: str = "explicit rate") -> "TierTable":
        """One tier covering every notional: an explicit rate (and amount) overriding any table."""
        tier = Tier(1, 0.0, math.inf, float(maintenance_margin_rate), float(max_leverage),
                    float(maintenance_amount))
        return cls([tier], symbol=symbol, source=source, check_amounts=False)

    # --- validation ---------------------------------------------------------------------------

    def _validate(self, check_amounts: bool) -> None:
        src = self.source
        if not self.tiers:
            raise TierTableError("the table has no tiers", source=src)
        for i, t in enumerate(self.tiers):
            for name, value in (("minNotional", t.min_notional), ("maxNotional", t.max_notional),
                                ("maintenanceMarginRate", t.maintenance_margin_rate),
                                ("maxLeverage", t.max_leverage)):
                if isinstance(value, float) and math.isnan(value):
                    raise TierValueError("NaN", tier=t.tier, field=name, source=src)
                if value < 0:
                    raise TierValueError(f"negative: {value}", tier=t.tier, field=name, source=src)
            if not t.maintenance_margin_rate < 1:
                raise TierValueError(f"rate {t.maintenance_margin_rate} is not below 1 (100 %)",
                                     tier=t.tier, field="maintenanceMarginRate", source=src)
            if t.max_leverage < 1:
                raise TierValueError(f"max leverage {t.max_leverage} is below 1", tier=t.tier,
                                     field="maxLeverage", source=src)
            if t.tier != i + 1:
                raise TierOrderError(f"tier numbers must be 1, 2, 3, ...; found {t.tier} at "
                                     f"position {i + 1}", tier=t.tier, field="tier", source=src)
            if not t.max_notional > t.min_notional:
                raise TierOrderError(f"maxNotional {t.max_notional} is not above minNotional "
                                     f"{t.min_notional}", tier=t.tier, field="maxNotional", source=src)
        if self.tiers[0].min_notional != 0:
            raise TierGapError(f"the first tier starts at {self.tiers[0].min_notional}, not 0",
                               tier=1, field="minNotional", source=src)
        for prev, t in zip(self.tiers, self.tiers[1:]):       # sortedness first: it explains gaps
            if t.min_notional < prev.min_notional:
                raise TierOrderError(f"minNotional {t.min_notional} is below tier {prev.tier}'s "
                                     f"{prev.min_notional}: tiers are not sorted",
                                     tier=t.tier, field="minNotional", source=src)
        for prev, t in zip(self.tiers, self.tiers[1:]):
            if t.min_notional > prev.max_notional:
                raise TierGapError(f"minNotional {t.min_notional} leaves a gap after tier "
                                   f"{prev.tier}'s maxNotional {prev.max_notional}",
                                   tier=t.tier, field="minNotional", source=src)
            if t.min_notional < prev.max_notional:
                raise TierOverlapError(f"minNotional {t.min_notional} overlaps tier {prev.tier}, "
                                       f"whose maxNotional is {prev.max_notional}",
                                       tier=t.tier, field="minNotional", source=src)
            if t.maintenance_margin_rate < prev.maintenance_margin_rate:
                raise TierRateError(f"rate {t.maintenance_margin_rate} is below tier {prev.tier}'s "
                                    f"{prev.maintenance_margin_rate}", tier=t.tier,
                                    field="maintenanceMarginRate", source=src)
            if t.max_leverage > prev.max_leverage:
                raise TierLeverageError(f"max leverage {t.max_leverage} is above tier {prev.tier}'s "
                                        f"{prev.max_leverage}", tier=t.tier, field="maxLeverage",
                                        source=src)
        # Amounts last: a structural fault (a falling rate, say) also derives a wrong amount.
        for t in self.tiers:
            if math.isnan(t.maintenance_amount) or t.maintenance_amount < 0:
                raise TierValueError(f"negative or NaN: {t.maintenance_amount}", tier=t.tier,
                                     field="cum", source=src)
        if check_amounts:
            derived = derive_maintenance_amounts([t.min_notional for t in self.tiers],
                                                 [t.maintenance_margin_rate for t in self.tiers])
            for t, der in zip(self.tiers, derived):
                if not math.isclose(t.maintenance_amount, der, rel_tol=AMOUNT_RTOL, abs_tol=AMOUNT_ATOL):
                    raise TierAmountError(f"published maintenance amount {t.maintenance_amount} "
                                          f"disagrees with the derived {der:.10g}", tier=t.tier,
                                          field="cum", source=src)

    # --- lookup -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tiers)

    def __iter__(self):
        return iter(self.tiers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TierTable) and self.tiers == other.tiers and \
            self.meta() == other.meta()

    def __hash__(self) -> int:
        return hash(self.tiers)

    def meta(self) -> dict:
        """What a stored snapshot records beside the rows: only what differs from the default
        (OKX: ``upper_inclusive``, ``amounts`` false, ``contract_value``)."""
        out: dict[str, Any] = {}
        if self.upper_inclusive:
            out["upper_inclusive"] = True
        if not self.amounts:
            out["amounts"] = False
        if self.contract_value is not None:
            out["contract_value"] = self.contract_value
        return out

    def __repr__(self) -> str:
        return f"TierTable({self.symbol or self.source!r}, {len(self.tiers)} tiers)"

    def lookup(self, notional: float) -> Tier:
        """The tier whose ``[minNotional, maxNotional)`` range holds ``notional`` (USDT);
        ``(minNotional, maxNotional]`` for an ``upper_inclusive`` table (OKX, in base units).

        Notionals beyond the last tier's cap stay in the last tier (the exchange would refuse the
        order; :func:`btperp.margin` reports that separately through ``max_leverage``).
        """
        if not notional >= 0:
            raise ValueError(f"notional must be a non-negative number, got {notional}")
        if self.upper_inclusive:
            return self.tiers[max(bisect.bisect_left(self._floors, notional) - 1, 0)]
        i = bisect.bisect_right(self._floors, notional) - 1
        return self.tiers[i]

    def lookup_index(self, notional: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`lookup`: 0-based tier indices for an array of notionals."""
        if self.upper_inclusive:
            return np.maximum(np.searchsorted(self._floors, np.asarray(notional, dtype=float),
                                              side="left") - 1, 0)
        return np.searchsorted(self._floors, np.asarray(notional, dtype=float), side="right") - 1

    def rates_and_amounts(self, notional: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized maintenance rate and amount for an array of notionals."""
        idx = self.lookup_index(notional)
        return self._rates[idx], self._amounts[idx]

    def maintenance_margin(self, notional: float) -> float:
        """``notional * mmr - cum`` with the tier of ``notional`` (Binance's and Bybit's formula)."""
        t = self.lookup(notional)
        return notional * t.maintenance_margin_rate - t.maintenance_amount

    def max_leverage_at(self, notional: float) -> float:
        """Highest leverage allowed for a position of this notional (USDT)."""
        return self.lookup(notional).max_leverage

    def max_notional_for(self, leverage: float) -> float:
        """Largest notional (USDT) a position may reach at ``leverage``: the cap of the last tier that
        still allows it (Binance "Leverage and Margin of USDⓈ-M Futures": a higher leverage allows a
        smaller position). 0 when no tier allows ``leverage``."""
        cap = 0.0
        for t in self.tiers:
            if t.max_leverage >= leverage * (1 - 1e-12):
                cap = t.max_notional
        return cap

    def to_ccxt(self) -> list[dict]:
        """The table in ccxt's shape (``cum`` at the top level), as btperp's files store it."""
        return [t.to_ccxt() for t in self.tiers]


def _as_utc_datetime(when: Any) -> datetime:
    """A date, datetime, pandas Timestamp or ISO string as an aware UTC datetime."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"cannot read the date {when!r}; write it as YYYY-MM-DD or "
                             f"YYYY-MM-DDTHH:MM") from None
    elif hasattr(when, "to_pydatetime"):
        when = when.to_pydatetime()
    elif isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    if not isinstance(when, datetime):
        raise TypeError(f"not a date or time: {when!r}")
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


@dataclass(frozen=True)
class TableInForce:
    """The answer of :meth:`TierHistory.at`: a table and how sure we are it was in force."""

    table: TierTable
    observed: datetime
    """When this table was first observed (it is used from then until the next one)."""
    assumed: bool
    """True when the date is before the first known table and the earliest was used instead."""


class TierHistory:
    """Time-versioned tier tables of one symbol: the table in force at any timestamp.

    A table is taken to be in force from the date it was first observed until the next table's
    date. Snapshots are weekly, so a real change may have happened up to a week before its
    ``observed`` date. Before the first known table the earliest one is used, ``assumed`` is set
    in the answer and an :class:`~btperp.errors.EarliestTableAssumed` warning is issued once.
    """

    def __init__(self, versions: Iterable[tuple[Any, TierTable]], *, symbol: str | None = None):
        pairs = sorted(((_as_utc_datetime(when), table) for when, table in versions),
                       key=lambda p: p[0])
        if not pairs:
            raise TierTableError("a tier history needs at least one table", source=symbol)
        for (a, _), (b, _) in zip(pairs, pairs[1:]):
            if a == b:
                raise TierTableError(f"two tables observed at {a.date()}", source=symbol)
        self.symbol = symbol
        self.versions: tuple[tuple[datetime, TierTable], ...] = tuple(pairs)
        self._times = [p[0] for p in pairs]
        self._warned = False

    @classmethod
    def from_snapshots(cls, snapshots: Sequence[Mapping[str, Any]], *, symbol: str | None = None,
                       source: str | None = None) -> "TierHistory":
        """From ``[{"observed": "2022-02-05", "tiers": [...ccxt rows...]}, ...]`` (btperp's files)."""
        versions = []
        for i, snap in enumerate(snapshots):
            if not isinstance(snap, Mapping):
                raise TierTableError(f"snapshot {i} is a JSON {type(snap).__name__}; expected an object "
                                     f"with 'observed' and 'tiers'", source=source or symbol)
            when = snap.get("observed")
            if when is None:
                raise TierTableError(f"snapshot {i} has no 'observed' date", source=source or symbol)
            where = f"{source or symbol} snapshot {when}"
            meta = {k: snap[k] for k in ("upper_inclusive", "amounts", "contract_value") if k in snap}
            if "contract_value" in meta:
                cv = _number(meta, "contract_value", 1, where)
                if not 0 < cv < math.inf:
                    raise TierValueError(f"must be positive, got {cv}", field="contract_value",
                                         source=where)
            for key in ("upper_inclusive", "amounts"):
                if key in meta and not isinstance(meta[key], bool):
                    raise TierTableError(f"{key!r} must be true or false, got {meta[key]!r}", source=where)
            versions.append((when, TierTable.from_ccxt(snap.get("tiers") or [], symbol=symbol,
                                                       source=where, **meta)))
        return cls(versions, symbol=symbol)

    @classmethod
    def constant(cls, table: TierTable) -> "TierHistory":
        """A history with one table in force at every date (no assumption is flagged)."""
        history = cls([(datetime(1970, 1, 1, tzinfo=timezone.utc), table)], symbol=table.symbol)
        return history

    @property
    def first_observed(self) -> datetime:
        return self._times[0]

    def at(self, when: Any) -> TableInForce:
        """The table in force at ``when`` (date, datetime, Timestamp or ISO string; naive = UTC)."""
        moment = _as_utc_datetime(when)
        i = bisect.bisect_right(self._times, moment) - 1
        if i >= 0:
            observed, table = self.versions[i]
            return TableInForce(table, observed, False)
        observed, table = self.versions[0]
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.symbol or 'tier history'}: {moment:%Y-%m-%d %H:%M} is before the "
                          f"first known tier table ({observed:%Y-%m-%d}); that table is used for every "
                          f"date before it (the exchange's tiers may have differed then). For exact "
                          f"tiers start on or after {observed:%Y-%m-%d}, or import older tables with "
                          f"`btperp data import-tiers`",
                          EarliestTableAssumed, stacklevel=outside_stacklevel())
        return TableInForce(table, observed, True)

    def change_times(self) -> list[datetime]:
        """Dates from which each version is in force, oldest first."""
        return list(self._times)

    def to_snapshots(self) -> list[dict]:
        """The history in btperp's file shape."""
        return [{"observed": when.strftime("%Y-%m-%d"), "tiers": table.to_ccxt(), **table.meta()}
                for when, table in self.versions]
