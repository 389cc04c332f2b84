"""The liquidation calculator behind ``btperp calc``: an account description in, a margin report out.

Pure core: the caller supplies the tier tables (``tiers_for``), so nothing here reads files.
Account description (the JSON of ``btperp calc --account``)::

    {"exchange": "binance-usdm", "margin_mode": "cross", "wallet_balance": 10000,
     "taker_fee": 0.0005, "position_mode": "one-way",
     "positions": [{"symbol": "BTC/USDT:USDT", "side": "long", "size": 0.5, "entry_price": 60000,
                    "mark_price": 59000, "leverage": 20, "margin": null,
                    "maintenance_margin_rate": null, "maintenance_amount": null,
                    "max_leverage": null}]}

A position may give ``contracts`` (× ``contract_size``, or the contract value of an OKX tier
table) instead of ``size``. Coin-margined exchanges (``binance-coinm``, ``bybit-inverse``) take
``contracts`` only, ``contract_size`` in USD (default: the exchange's), symbols quoted in USD
(``BTCUSD``, ``BTC/USD:BTC``), and ``wallet_balance``, ``margin`` and every amount in the coin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import AlreadyLiquidatedError, InputError
from .inverse import InversePositionMargin, evaluate_inverse, make_inverse_position
from .margin import AccountMargin, MarginMode, Side, check_leverage, evaluate, make_position
from .rules import Hyperliquid, Rulebook, get_rulebook
from .symbols import to_inverse, to_unified
from .tiers import TableInForce, TierHistory, TierTable, contracts_to_base

ACCOUNT_FIELDS = ("exchange", "margin_mode", "wallet_balance", "taker_fee", "position_mode", "positions")
POSITION_FIELDS = ("symbol", "side", "size", "entry_price", "mark_price", "leverage", "margin",
                   "maintenance_margin_rate", "maintenance_amount", "max_leverage", "contracts",
                   "contract_size")

#: ``tiers_for(rulebook, unified_symbol)`` → the symbol's tier history on that exchange, or None.
TierSource = Callable[[Rulebook, str], "TierHistory | None"]


@dataclass(frozen=True)
class CalcReport:
    """An account's margin state plus where each position's tier table came from."""

    account: AccountMargin
    """Its positions are :class:`~btperp.margin.PositionMargin` (linear) or
    :class:`~btperp.inverse.InversePositionMargin` (coin-margined, amounts in the coin)."""
    tables: tuple[TableInForce | None, ...]
    """Per position: the table in force (None where explicit rates or max leverage were given)."""

    def to_dict(self) -> dict:
        """The JSON shape of ``btperp calc --json`` (positions in input order)."""
        acct = self.account
        rows = []
        for pm, tif in zip(acct.positions, self.tables):
            if isinstance(pm, InversePositionMargin):
                rows.append(_inverse_row(pm, tif))
                continue
            rows.append({
                "symbol": pm.symbol, "side": str(pm.side), "size": pm.size,
                "entry_price": pm.entry_price, "mark_price": pm.mark_price, "leverage": pm.leverage,
                "notional": pm.notional, "tier": pm.tier,
                "maintenance_margin_rate": pm.maintenance_margin_rate,
                "maintenance_amount": pm.maintenance_amount,
                "initial_margin": pm.initial_margin, "maintenance_margin": pm.maintenance_margin,
                "margin": pm.margin, "unrealized_pnl": pm.unrealized_pnl,
                "margin_balance": pm.margin_balance, "margin_ratio": _finite(pm.margin_ratio),
                "liquidation_price": pm.liquidation_price, "liquidation_tier": pm.liquidation_tier,
                "bankruptcy_price": pm.bankruptcy_price,
                "distance_to_liquidation_pct": pm.distance_to_liquidation_pct,
                "tier_table_observed": tif.observed.strftime("%Y-%m-%d") if tif else None,
                "tier_table_assumed": tif.assumed if tif else False,
            })
        out = {"exchange": acct.exchange, "margin_mode": str(acct.margin_mode),
               "wallet_balance": acct.wallet_balance, "taker_fee": acct.taker_fee,
               "margin_balance": acct.margin_balance, "maintenance_margin": acct.maintenance_margin,
               "margin_ratio": _finite(acct.margin_ratio), "positions": rows}
        if any(isinstance(pm, InversePositionMargin) for pm in acct.positions):
            coins = {pm.settle for pm in acct.positions}
            out = {"contract_type": "inverse", "settle": coins.pop() if len(coins) == 1 else None, **out}
        note = approximation_note(acct.exchange)
        if note:
            out["approximation"] = note
        return out


def _inverse_row(pm: InversePositionMargin, tif: TableInForce | None) -> dict:
    """One coin-margined position in ``btperp calc --json``: prices in USD, amounts in the coin."""
    return {
        "symbol": pm.symbol, "settle": pm.settle, "side": str(pm.side), "contracts": pm.contracts,
        "contract_size": pm.contract_size, "face_value": pm.face_value, "entry_price": pm.entry_price,
        "mark_price": pm.mark_price, "leverage": pm.leverage, "position_value": pm.position_value,
        "tier": pm.tier, "maintenance_margin_rate": pm.maintenance_margin_rate,
        "maintenance_amount": pm.maintenance_amount, "initial_margin": pm.initial_margin,
        "maintenance_margin": pm.maintenance_margin, "margin": pm.margin,
        "unrealized_pnl": pm.unrealized_pnl, "margin_balance": pm.margin_balance,
        "margin_ratio": _finite(pm.margin_ratio), "liquidation_price": pm.liquidation_price,
        "liquidation_tier": pm.liquidation_tier, "bankruptcy_price": pm.bankruptcy_price,
        "distance_to_liquidation_pct": pm.distance_to_liquidation_pct,
        "tier_table_observed": tif.observed.strftime("%Y-%m-%d") if tif else None,
        "tier_table_assumed": tif.assumed if tif else False,
    }


def approximation_note(exchange: str) -> str | None:
    """What a report on an approximating rulebook (``generic``) says about itself, else None."""
    rulebook = get_rulebook(exchange, core=True)
    if not rulebook.approximate:
        return None
    return (f"{rulebook.name}: an approximation, not any exchange's rules: freqtrade's formula for "
            f"Gate-like exchanges (maintenance margin = notional at the mark x (MMR + taker fee), no "
            f"maintenance amount) with the rates given")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _number(obj: Mapping[str, Any], key: str, where: str, *, positive: bool = True,
            allow_zero: bool = False) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"must be a number, got {value!r}", field=where + key)
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise InputError(f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}",
                         field=where + key)
    return float(value)


def _table_for(rulebook: Rulebook, symbol: str, raw: Mapping[str, Any], where: str,
               tiers_for: TierSource | None, at: Any) -> tuple[TierTable, TableInForce | None]:
    rate = _number(raw, "maintenance_margin_rate", where, allow_zero=True)
    amount = _number(raw, "maintenance_amount", where, allow_zero=True)
    max_lev = _number(raw, "max_leverage", where)
    if max_lev is not None and max_lev < 1:
        raise InputError(f"must be at least 1, got {max_lev:g}", field=where + "max_leverage")
    if amount and not rulebook.maintenance_amounts:
        raise InputError(f"{rulebook.name} deducts no maintenance amount (maintenance margin = notional "
                         f"x (rate + taker fee)); leave it out", field=where + "maintenance_amount")
    if rulebook.approximate and rate is None:
        raise InputError(f"{rulebook.name} has no tiers: give the maintenance_margin_rate to approximate "
                         f"the venue with (and the taker_fee)", field=where + "maintenance_margin_rate")
    if rate is not None:
        if rate >= 1:
            raise InputError(f"must be a fraction below 1 (0.004 = 0.4 %), got {rate:g}",
                             field=where + "maintenance_margin_rate")
        return TierTable.single(rate, amount or 0.0, max_lev or math.inf, symbol=symbol), None
    if amount is not None:
        raise InputError("a maintenance amount needs its maintenance_margin_rate",
                         field=where + "maintenance_amount")
    if isinstance(rulebook, Hyperliquid):
        if max_lev is None:
            raise InputError("Hyperliquid has no tiers: give the asset's max_leverage "
                             "(maintenance margin is half the initial margin at max leverage)",
                             field=where + "max_leverage")
        return rulebook.table_for_max_leverage(max_lev, symbol), None
    history = tiers_for(rulebook, symbol) if tiers_for else None
    if history is None:
        raise InputError(f"no tier table for {symbol} on {rulebook.name}; give "
                         f"maintenance_margin_rate (and maintenance_amount), or a tier file",
                         field=where + "symbol")
    tif = history.at(at) if at is not None else TableInForce(history.versions[-1][1],
                                                              history.versions[-1][0], False)
    return tif.table, tif


def _linear_size(raw: Mapping[str, Any], table: TierTable, where: str) -> Any:
    """The position size in base units: ``size``, or ``contracts`` × ``contract_size`` (default: the
    contract value an OKX tier table was fetched with)."""
    contracts = raw.get("contracts")
    if contracts is None:
        if raw.get("contract_size") is not None:
            raise InputError("a contract size goes with contracts; give contracts, or the size in base "
                             "units alone", field=where + "contract_size")
        if raw.get("size") is None:
            raise InputError("missing", field=where + "size")
        return raw["size"]
    if raw.get("size") is not None:
        raise InputError("give the size in base units or the contracts, not both", field=where + "contracts")
    n = _number(raw, "contracts", where)
    if not n:
        raise InputError(f"must be positive, got {contracts!r}", field=where + "contracts")
    value = _number(raw, "contract_size", where)
    if value is None:
        value = table.contract_value
    if not value:
        raise InputError("give contract_size (base units per contract, OKX's ctVal): this tier table "
                         "does not know it", field=where + "contract_size")
    return contracts_to_base(n, value)


def _contracts(raw: Mapping[str, Any], where: str) -> float:
    """A coin-margined position's size: its contracts (a size in base units has no meaning there)."""
    if raw.get("size") is not None:
        raise InputError("coin-margined positions are sized in contracts: give contracts (and "
                         "contract_size in USD)", field=where + "size")
    if raw.get("contracts") is None:
        raise InputError("missing (coin-margined positions are sized in contracts)", field=where + "contracts")
    return raw["contracts"]


def _contract_size(rulebook: Rulebook, symbol: str, raw: Mapping[str, Any], where: str) -> float:
    """USD per contract: as given, else the exchange's (Binance COIN-M BTC 100, others 10; Bybit 1)."""
    given = _number(raw, "contract_size", where)
    return given if given is not None else rulebook.default_contract_size(symbol.split("/")[0])


def calculate(account: Mapping[str, Any], *, tiers_for: TierSource | None = None,
              at: Any = None) -> CalcReport:
    """Margin report of an account description (see the module docstring for its fields).

    ``at`` picks the tier table in force at that date (default: the newest known table).
    Raises :class:`~btperp.errors.InputError` (with the field) for bad input, a leverage above the
    tier's maximum, or a position already past its liquidation point.
    """
    if not isinstance(account, Mapping):
        raise InputError("the account must be a JSON object")
    unknown = sorted(set(account) - set(ACCOUNT_FIELDS))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(ACCOUNT_FIELDS)}",
                         field=unknown[0])
    rulebook = get_rulebook(account.get("exchange", "binance-usdm"), core=True)
    mode = MarginMode.parse(account.get("margin_mode", "isolated"))
    wallet = _number(account, "wallet_balance", "", allow_zero=True)
    fee = _number(account, "taker_fee", "", allow_zero=True)
    if fee is not None and fee >= 0.01:
        raise InputError(f"{fee:g} is {fee * 100:g} % a trade; give the rate as a fraction below 0.01, "
                         f"e.g. 0.0005 for 0.05 %", field="taker_fee")
    if fee is None and rulebook.taker_fee is None:
        raise InputError(f"{rulebook.name} has no standard fee: give the taker fee rate of the venue it "
                         f"approximates, e.g. 0.0005 for 0.05 %", field="taker_fee")
    position_mode = str(account.get("position_mode", "one-way")).lower()
    if position_mode not in ("one-way", "hedge"):
        raise InputError(f"must be 'one-way' or 'hedge', got {position_mode!r}", field="position_mode")
    raw_positions = account.get("positions")
    if not isinstance(raw_positions, list) or not raw_positions:
        raise InputError("must be a non-empty list of positions", field="positions")
    if mode is MarginMode.CROSS and wallet is None:
        raise InputError("cross margin needs the wallet balance", field="wallet_balance")

    positions, tables = [], []
    for i, raw in enumerate(raw_positions):
        where = f"positions[{i}]."
        if not isinstance(raw, Mapping):
            raise InputError("must be an object", field=f"positions[{i}]")
        unknown = sorted(set(raw) - set(POSITION_FIELDS))
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(POSITION_FIELDS)}",
                             field=where + unknown[0])
        if not raw.get("symbol"):
            raise InputError("missing", field=where + "symbol")
        if raw.get("side") is None:
            raise InputError("missing ('long' or 'short')", field=where + "side")
        symbol = (to_inverse(str(raw["symbol"]), field=where + "symbol") if rulebook.inverse
                  else to_unified(str(raw["symbol"]), rulebook.settle))
        contracts = _contracts(raw, where) if rulebook.inverse else None
        table, tif = _table_for(rulebook, symbol, raw, where, tiers_for, at)
        if not rulebook.inverse:
            size = _linear_size(raw, table, where)
        if raw.get("entry_price") is None:
            raise InputError("missing", field=where + "entry_price")
        margin = raw.get("margin")
        if margin is not None and mode is MarginMode.CROSS:
            raise InputError("an isolated margin is meaningless in cross margin; use wallet_balance",
                             field=where + "margin")
        side = Side.parse(raw["side"], where + "side")
        if rulebook.inverse:
            pos = make_inverse_position(symbol, side, contracts, raw["entry_price"],
                                        contract_size=_contract_size(rulebook, symbol, raw, where),
                                        tiers=table, mark_price=raw.get("mark_price"),
                                        leverage=raw.get("leverage"), margin=margin, field_prefix=where)
            check_leverage(rulebook, pos.mirror(), where + "leverage")
        else:
            pos = make_position(symbol, side, size, raw["entry_price"], tiers=table,
                                mark_price=raw.get("mark_price"), leverage=raw.get("leverage"),
                                margin=margin, field_prefix=where)
            check_leverage(rulebook, pos, where + "leverage")
        positions.append(pos)
        tables.append(tif)

    solve = evaluate_inverse if rulebook.inverse else evaluate
    result = solve(rulebook, positions, margin_mode=mode, wallet_balance=wallet, taker_fee=fee,
                   hedge_mode=position_mode == "hedge")
    for i, pm in enumerate(result.positions):
        if pm.liquidated:
            raise AlreadyLiquidatedError(
                f"already past liquidation at mark {pm.mark_price:g}: maintenance margin "
                f"{pm.maintenance_margin:,.2f} ≥ margin balance {pm.margin_balance:,.2f}"
                + (f" (liquidation price {pm.liquidation_price:,.2f})" if pm.liquidation_price else ""),
                field=f"positions[{i}]")
    return CalcReport(result, tuple(tables))
