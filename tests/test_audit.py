"""Liquidation audit (issue #7): the vectorized replay against the broker and a per-bar reference,
verdicts on reported liquidations, many positions at once, a backtest's liquidations explained."""

import json
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import btperp
from btperp.audit import audit_history, audit_position, audit_positions, market_of
from btperp.backtest import RunConfig, run
from btperp.cli.main import main as cli
from btperp.errors import DataError, InputError, LeverageError
from btperp.replay import Positions, _SparseMin, replay
from btperp.report import audit_history as report_audit_history
from btperp.rules import get_rulebook
from btperp.tiers import TierHistory

import perpkit

pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")
ETH = dict(symbol="ETHUSDT", side="long", entry_time="2021-05-18 00:00", entry_price=3283.23,
           margin=1000, end="2021-05-21")
HERE = __file__


# --- the acceptance scenario: ETHUSDT on 2021-05-19 ----------------------------------------------

def test_eth_2x_survives_the_mark_but_not_a_last_price_trigger():
    a = audit_position(**ETH, leverage=2)
    assert not a.liquidated and a.liquidation_time is None
    assert a.data_end == "2021-05-21 23:00"                       # --end includes the whole day
    assert a.other_trigger["liquidated"] and a.other_trigger["liquidation_time"] == "2021-05-19 13:00"
    last = audit_position(**ETH, leverage=2, trigger="last")
    assert last.liquidated and last.liquidation_time == "2021-05-19 13:00"
    # the last price wicked to 1400.73, the mark bottomed at 1764.26, the liquidation price between
    assert last.bar["last"]["low"] == 1400.73
    assert last.bar["mark"]["low"] == pytest.approx(1764.26, abs=0.01)
    # README: liquidated in the 13:00 bar at 1,654.23 (tier 1, 0.5 %): size 2000 / 3283.23, margin
    # 1000 less the four funding events after the entry (08:00, 16:00, 00:00, 08:00)
    frame = btperp.load("ETHUSDT", start="2021-05-18 01:00", end="2021-05-19 13:00")
    size = 2000 / 3283.23
    margin = 1000 - size * frame["funding_per_unit"].sum()
    assert last.liquidation_price == pytest.approx((size * 3283.23 - margin) / (size * 0.995), rel=1e-12)
    assert round(last.liquidation_price, 2) == 1654.23
    assert last.bankruptcy_price == pytest.approx(3283.23 - margin / size, rel=1e-12)
    assert a.other_trigger["liquidation_price"] == pytest.approx(last.liquidation_price, rel=1e-12)


def test_eth_3x_is_liquidated_by_the_mark_in_the_12_00_bar():
    a = audit_position(**ETH, leverage=3)
    assert a.liquidated and a.liquidation_time == "2021-05-19 12:00"
    assert a.size == pytest.approx(3000 / 3283.23)
    # at the trigger the equity equals the maintenance margin (tier 1, 0.5 %)
    assert a.equity == pytest.approx(a.maintenance_margin, rel=1e-9)
    assert a.maintenance_margin == pytest.approx(a.size * a.trigger_price * 0.005, rel=1e-12)
    assert a.tier == 1 and a.maintenance_rate == 0.005
    # funding paid from entry through the liquidation bar: the events at 08:00, 16:00, 00:00, 08:00
    frame = btperp.load("ETHUSDT", start="2021-05-18", end="2021-05-19 12:00")
    events = frame["funding_per_unit"].dropna()
    paid = events[(events.index > "2021-05-18 00:00") & (events.index <= "2021-05-19 12:00")]
    assert len(paid) == 4 and a.funding_paid == pytest.approx(a.size * paid.sum(), rel=1e-12)
    assert "first known tier table" in " ".join(a.notes)


@pytest.mark.parametrize("leverage,trigger,bar", [(2, "mark", None), (2, "last", "2021-05-19 13:00"),
                                                  (3, "mark", "2021-05-19 12:00")])
def test_audit_and_broker_agree_on_the_acceptance_cases(leverage, trigger, bar):
    frame = btperp.load("ETHUSDT", start="2021-05-17 22:00", end="2021-05-21 23:59")
    size = 1000 * leverage / 3283.23
    _, broker = perpkit.run(frame, {1: [("buy", {"size": size})]}, leverage=leverage, tiers=None,
                            trigger=trigger, cash=10_000)
    a = audit_position(**ETH, leverage=leverage, trigger=trigger)
    assert [f.price for f in broker.fills][:1] == [3283.23]         # bought at the 00:00 open
    times = [x.time.strftime("%Y-%m-%d %H:%M") for x in broker.liquidations]
    assert times == ([] if bar is None else [bar]) and a.liquidation_time == bar
    assert broker.funding_paid == pytest.approx(a.funding_paid, rel=1e-9, abs=1e-9)
    if bar:
        x = broker.liquidations[0]
        assert x.liquidation_price == pytest.approx(a.liquidation_price, rel=1e-12)
        assert x.bankruptcy_price == pytest.approx(a.bankruptcy_price, rel=1e-12)
        assert (x.tier, x.equity) == (a.tier, pytest.approx(a.equity, rel=1e-9))


# --- verdicts -----------------------------------------------------------------------------------

def test_a_liquidation_the_mark_never_reached_is_earlier_than_the_rules_imply(capsys):
    code = cli(["audit", "position", "--symbol", "ETHUSDT", "--side", "long", "--entry-time",
                "2021-05-18 00:00", "--entry-price", "3283.23", "--margin", "1000", "--leverage", "2",
                "--end", "2021-05-21", "--reported-time", "2021-05-19 13:12", "--reported-price", "1650"])
    out = capsys.readouterr().out
    assert code == 0
    assert "EARLIER THAN THE RULES IMPLY" in out
    # the closest mark price is shown: the 13:00 bar's low, 6.65 % above the liquidation price
    assert "closest mark price before the report: low 1,764.26 at 2021-05-19 13:00" in out
    a = audit_position(**ETH, leverage=2, reported_time="2021-05-19 13:12", reported_price=1650)
    assert a.verdict == "earlier" and a.verdict_text == "earlier than the rules imply"
    assert a.closest["time"] == "2021-05-19 13:00"
    assert a.closest["price"] == pytest.approx(1764.26, abs=0.01)
    assert a.closest["distance_pct"] == pytest.approx((1764.258 / a.closest["liquidation_price"] - 1) * 100,
                                                      rel=1e-4)


@pytest.mark.parametrize("reported,verdict", [("2021-05-19 12:41", "consistent"),
                                              ("2021-05-19 11:59", "earlier"),
                                              ("2021-05-19 13:00", "later")])
def test_verdicts_compare_the_reported_bar_with_the_rules_bar(reported, verdict):
    a = audit_position(**ETH, leverage=3, reported_time=reported, reported_price=2200)
    assert a.verdict == verdict
    assert "the rules liquidate it in the 2021-05-19 12:00 bar" in a.evidence[0]


def test_json_output_has_the_documented_fields(capsys):
    code = cli(["audit", "position", "--symbol", "ETHUSDT", "--side", "long", "--entry-time",
                "2021-05-18 00:00", "--entry-price", "3283.23", "--margin", "1000", "--leverage", "3",
                "--end", "2021-05-21", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["liquidated"] is True and out["liquidation_time"] == "2021-05-19 12:00"
    assert out["liquidation_price"] == pytest.approx(2204.18, abs=0.01)
    assert out["funding_paid"] == pytest.approx(3.9649, abs=1e-4)
    assert out["verdict"] is None


def test_position_plot_is_a_png(tmp_path):
    path = tmp_path / "p.png"
    assert cli(["audit", "position", "--symbol", "ETHUSDT", "--side", "short", "--entry-time",
                "2021-05-19 13:00", "--size", "2", "--leverage", "10", "--end", "2021-05-25",
                "--reported-time", "2021-05-20 03:00", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["--symbol", "DOGEUSDT", "--side", "long", "--entry-time", "2022-01-01", "--size", "1",
      "--leverage", "2"], "no data for symbol 'DOGEUSDT'"),
    (["--symbol", "ETHUSDT", "--side", "long", "--entry-time", "2022-01-01", "--size", "1"],
     "give the size and the leverage"),
    (["--symbol", "ETHUSDT", "--side", "long", "--entry-time", "2022-01-01", "--margin", "1000",
      "--leverage", "150"], "above the"),
    (["--symbol", "ETHUSDT", "--side", "long", "--entry-time", "2015-01-01", "--size", "1",
      "--leverage", "2"], "is outside the data (2019-12-23 11:00 to"),
    (["--symbol", "ETHUSDT", "--side", "long", "--entry-time", "2022-01-01", "--size", "1",
      "--leverage", "2", "--margin-mode", "cross"], "cross margin: give the margin"),
    (["--symbol", "ETHUSDT", "--side", "long", "--entry-time", "2022-01-02", "--size", "1",
      "--leverage", "2", "--reported-time", "2022-01-01"], "before the entry bar"),
])
def test_bad_position_input_is_a_clear_error(args, message, capsys):
    assert cli(["audit", "position", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.splitlines()[-1].startswith("btperp audit position: error:")


# --- the replay against a per-bar reference and the broker -------------------------------------------

RB = get_rulebook("binance-usdm")
T1 = perpkit.table((0, 2_000, 0.01, 50), (2_000, 8_000, 0.025, 20), (8_000, math.inf, 0.05, 10))
T2 = perpkit.table((0, 1_000, 0.02, 25), (1_000, 4_000, 0.04, 12), (4_000, math.inf, 0.08, 10))
HISTORY = TierHistory([(datetime(2024, 1, 1, tzinfo=timezone.utc), T1),
                       (datetime(2024, 1, 2, 6, tzinfo=timezone.utc), T2)], symbol="TEST/USDT:USDT")


def _frame(moves, wicks, mark_gap, funding, later, start="2024-01-01"):
    close = 100 * np.exp(np.cumsum(moves))
    open_ = np.r_[100.0, close[:-1]] * np.exp(np.asarray(mark_gap))
    low = np.minimum(open_, close) * (1 - np.asarray(wicks))
    high = np.maximum(open_, close) * (1 + np.asarray(wicks)[::-1])
    # marks: inside the last range, less extreme (what an index price does to a wick)
    mark_low = np.minimum(open_, close) * (1 - 0.6 * np.asarray(wicks))
    mark_high = np.maximum(open_, close) * (1 + 0.6 * np.asarray(wicks)[::-1])
    return perpkit.make_frame(close, open=open_, high=high, low=low, mark_open=open_, mark_close=close,
                              mark_low=mark_low, mark_high=mark_high, funding=funding,
                              funding_later=later, start=start)


#: T1 and T2 by hand: (floor, MMR, cum), cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1))
T1_ROWS = ((0, 0.01, 0.0), (2_000, 0.025, 30.0), (8_000, 0.05, 230.0))       # 2,000 × 1.5 %; + 8,000 × 2.5 %
T2_ROWS = ((0, 0.02, 0.0), (1_000, 0.04, 20.0), (4_000, 0.08, 180.0))        # 1,000 × 2 %; + 4,000 × 4 %


def _lp_by_hand(rows, side, size, entry, margin):
    """Binance's LP = (margin + cum − side·size·entry) / (size·MMR − side·size), with the tier
    whose notional range holds size × LP (None when no positive price liquidates)."""
    for k, (floor, mmr, cum) in enumerate(rows):
        lp = (margin + cum - side * size * entry) / (size * mmr - side * size)
        cap = rows[k + 1][0] if k + 1 < len(rows) else math.inf
        if lp > 0 and floor <= size * lp * (1 + 1e-12) and size * lp <= cap * (1 + 1e-12):
            return lp
    return None


def _reference(frame, side, size, entry, margin, leverage, i0, trigger="mark"):
    """Bar by bar with Binance's formula written out (``_lp_by_hand``), in the broker's order:
    funding at the open, the open check, funding later in the bar, the extreme check."""
    prefix = "mark_" if trigger == "mark" else ""
    o, h, lo = (frame[prefix + c].to_numpy() for c in ("open", "high", "low"))
    total = np.nan_to_num(frame["funding_per_unit"].to_numpy())
    at_open = np.nan_to_num(frame["funding_open_per_unit"].to_numpy())
    m, paid = margin, 0.0
    for t in range(i0, len(frame)):
        rows = T1_ROWS if frame.index[t] < pd.Timestamp("2024-01-02 06:00", tz="UTC") else T2_ROWS
        if t > i0:
            m -= side * size * at_open[t]
            paid += side * size * at_open[t]
            lp = _lp_by_hand(rows, side, size, entry, m)
            if lp is not None and side * (o[t] - lp) <= 0:
                return t, o[t], paid
        later = total[t] - (at_open[t] if t > i0 else at_open[t])
        m -= side * size * later
        paid += side * size * later
        lp = _lp_by_hand(rows, side, size, entry, m)
        if lp is not None and side * ((lo if side > 0 else h)[t] - lp) <= 0:
            return t, (o[t] if side * (o[t] - lp) <= 0 else lp), paid
    return None, None, paid


def test_the_hand_written_tables_are_the_tables_replayed():
    for rows, tiers in ((T1_ROWS, T1), (T2_ROWS, T2)):
        assert [(t.min_notional, t.maintenance_margin_rate, t.maintenance_amount) for t in tiers] == [
            (floor, mmr, pytest.approx(cum)) for floor, mmr, cum in rows]


bars = 40
market_data = st.tuples(
    st.lists(st.floats(-0.08, 0.08), min_size=bars, max_size=bars),
    st.lists(st.floats(0, 0.15), min_size=bars, max_size=bars),
    st.lists(st.floats(-0.05, 0.05), min_size=bars, max_size=bars),
    st.dictionaries(st.integers(0, bars - 1), st.floats(-0.01, 0.01), max_size=8),
    st.dictionaries(st.integers(0, bars - 1), st.floats(-0.01, 0.01), max_size=8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=market_data, side=st.sampled_from([1, -1]), notional=st.floats(200, 20_000),
       leverage=st.sampled_from([1.0, 2.0, 5.0, 10.0]), entry_bar=st.integers(1, 30),
       trigger=st.sampled_from(["mark", "last"]))
def test_replay_equals_the_broker_and_a_per_bar_reference(data, side, notional, leverage, entry_bar,
                                                          trigger):
    frame = _frame(*data)
    entry = float(frame["open"].iloc[entry_bar])
    size = notional / entry
    margin = size * entry / leverage
    t_ref, price_ref, paid_ref = _reference(frame, side, size, entry, margin, leverage, entry_bar, trigger)
    market = market_of(frame, HISTORY)
    out = replay(market, RB, Positions.of(side, size, entry, margin, leverage, entry_bar, len(frame)),
                 trigger=trigger)
    assert (out.bar[0] if out.liquidated[0] else None) == t_ref
    assert out.funding_paid[0] == pytest.approx(paid_ref, rel=1e-9, abs=1e-9)
    if t_ref is not None:
        assert out.trigger_price[0] == pytest.approx(price_ref, rel=1e-9)
    # the broker: an order sent in the bar before fills at this bar's open
    _, broker = perpkit.run(frame, {entry_bar - 1: [("buy" if side > 0 else "sell", {"size": size})]},
                            leverage=leverage, tiers=HISTORY, trigger=trigger, cash=1e9,
                            liquidation="full")
    got = [frame.index.get_loc(pd.Timestamp(x.time)) for x in broker.liquidations]
    assert got == ([] if t_ref is None else [t_ref])
    if t_ref is not None:
        assert broker.liquidations[0].trigger_price == pytest.approx(out.trigger_price[0], rel=1e-9)
        assert broker.liquidations[0].bankruptcy_price == pytest.approx(out.bankruptcy_price[0], rel=1e-9)
        # equity equals maintenance margin at the liquidation price (unless the bar gapped past it)
        if not out.gap[0]:
            assert out.equity[0] == pytest.approx(out.maintenance_margin[0], rel=1e-7, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(data=market_data, seed=st.integers(0, 2**31))
def test_many_positions_at_once_equal_one_at_a_time(data, seed):
    """The sparse-table path (many positions) and the scan path (one) give the same answers."""
    frame = _frame(*data)
    rng = np.random.default_rng(seed)
    n = 40
    entries = pd.DataFrame({"entry_time": frame.index[rng.integers(0, len(frame) - 1, n)],
                            "side": rng.choice(["long", "short"], n),
                            "leverage": rng.choice([1.0, 2.0, 5.0, 10.0], n),
                            "margin": rng.uniform(50, 1500, n)})
    table = audit_positions(entries, symbol="TEST/USDT:USDT", frame=frame, tiers=HISTORY)
    assert len(table) == n and list(table.columns[:4]) == list(entries.columns)
    for i in range(n):
        e = entries.iloc[i]
        one = audit_position("TEST/USDT:USDT", e.side, e.entry_time, frame=frame, tiers=HISTORY,
                             margin=e.margin, leverage=e.leverage)
        assert bool(table["liquidated"].iloc[i]) == one.liquidated
        if one.liquidated:
            assert table["liquidation_time"].iloc[i].strftime("%Y-%m-%d %H:%M") == one.liquidation_time
            assert table["liquidation_price"].iloc[i] == pytest.approx(one.liquidation_price, rel=1e-12)
        assert table["funding_paid"].iloc[i] == pytest.approx(one.funding_paid, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_many_positions_at_once_equal_the_per_bar_reference(seed):
    """Forty longs and forty shorts at once (more than the 16 a plain scan takes: the sparse table
    answers), each against ``_reference``: Binance's formula written out, bar by bar."""
    rng = np.random.default_rng(seed)
    frame = _frame(rng.uniform(-0.08, 0.08, bars), rng.uniform(0, 0.15, bars),
                   rng.uniform(-0.05, 0.05, bars),
                   {int(i): float(r) for i, r in zip(rng.integers(0, bars, 6), rng.uniform(-0.01, 0.01, 6))},
                   {int(i): float(r) for i, r in zip(rng.integers(0, bars, 6), rng.uniform(-0.01, 0.01, 6))})
    n = 80
    side = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    entry_bar = rng.integers(1, 31, n)
    entry = frame["open"].to_numpy()[entry_bar]
    size = rng.uniform(200, 1_500, n) / entry          # tier 1 of T1 at entry
    leverage = rng.choice([2.0, 5.0, 10.0, 20.0], n)
    margin = size * entry / leverage
    market = market_of(frame, HISTORY)
    for trigger in ("mark", "last"):
        out = replay(market, RB, Positions.of(side, size, entry, margin, leverage, entry_bar, len(frame)),
                     trigger=trigger)
        liquidated = 0
        for i in range(n):
            t_ref, price_ref, paid_ref = _reference(frame, side[i], size[i], entry[i], margin[i],
                                                    leverage[i], entry_bar[i], trigger)
            assert (out.bar[i] if out.liquidated[i] else None) == t_ref, (trigger, i)
            assert out.funding_paid[i] == pytest.approx(paid_ref, rel=1e-9, abs=1e-9)
            if t_ref is not None:
                liquidated += 1
                assert out.trigger_price[i] == pytest.approx(price_ref, rel=1e-9)
        assert 10 <= liquidated <= n - 10             # both outcomes, many times


@given(values=st.lists(st.floats(-100, 100), min_size=1, max_size=70),
       queries=st.lists(st.tuples(st.integers(0, 69), st.integers(1, 70), st.floats(-110, 110)),
                        min_size=1, max_size=30))
@example(values=[5.0, 1.0, 3.0], queries=[(0, 3, 1.0)])
def test_sparse_table_finds_the_first_value_at_or_below(values, queries):
    g = np.array(values)
    n = len(g)
    q = [(min(s, n - 1), min(max(e, min(s, n - 1) + 1), n), c) for s, e, c in queries]
    start, stop, c = (np.array(x) for x in zip(*q))
    got = _SparseMin(g).first_at_or_below(start.astype(np.int64), stop.astype(np.int64), c, missing=-1)
    for (s, e, ci), gi in zip(q, got):
        below = [i for i in range(s, e) if g[i] <= ci]
        assert gi == (below[0] if below else -1)


# --- many positions ------------------------------------------------------------------------------

def test_audit_positions_over_a_week_of_eth_entries():
    frame = btperp.load("ETHUSDT", start="2021-05-15", end="2021-05-25")
    hours = frame.index[:72]
    entries = pd.DataFrame({"entry_time": np.repeat(hours, 2), "side": "long",
                            "leverage": np.tile([2.0, 10.0], len(hours)), "margin": 1000.0})
    out = audit_positions(entries, symbol="ETHUSDT", frame=frame)
    at10 = out[out.leverage == 10]
    at2 = out[out.leverage == 2]
    assert at10["liquidated"].all()                 # no 10x long survives 2021-05-19
    assert (at10["liquidation_time"] <= pd.Timestamp("2021-05-19 13:00", tz="UTC")).all()
    # at 2x it depends on the entry: below 3,400 the liquidation price stays under the mark's
    # 1,764 bottom; above 3,550 it does not
    assert not at2[at2.entry_price <= 3400]["liquidated"].any()
    high = at2[at2.entry_price > 3550]
    assert len(high) > 20 and (high["liquidation_time"].dt.strftime("%m-%d") == "05-19").all()
    assert (out["entry_price"] == np.repeat(frame["open"].to_numpy()[:72], 2)).all()
    row = out.iloc[1]
    one = audit_position("ETHUSDT", "long", row.entry_time, frame=frame, margin=1000, leverage=10)
    assert row.liquidation_time.strftime("%Y-%m-%d %H:%M") == one.liquidation_time


@pytest.mark.parametrize("change,error,message", [
    (lambda e: e.drop(columns="side"), InputError, "'side'"),
    (lambda e: e.assign(entry_time=pd.Timestamp("2030-01-01", tz="UTC")), InputError, "outside the data"),
    (lambda e: e.assign(leverage=200.0), LeverageError, "above the"),
    (lambda e: e.assign(margin=-1.0), InputError, "positive"),
    (lambda e: e.drop(columns="margin"), InputError, "give the size and the leverage"),
])
def test_audit_positions_bad_input(change, error, message):
    frame = btperp.load("ETHUSDT", start="2022-01-01", end="2022-01-03")
    entries = pd.DataFrame({"entry_time": frame.index[:3], "side": "long", "leverage": 5.0, "margin": 100.0})
    with pytest.raises(error, match=message):
        audit_positions(change(entries), symbol="ETHUSDT", frame=frame)


def test_a_bar_without_a_mark_is_an_error_naming_it():
    frame = btperp.load("ETHUSDT", start="2022-01-01", end="2022-01-03")
    frame.iloc[5, frame.columns.get_loc("mark_low")] = np.nan
    with pytest.raises(DataError, match="mark low price nan at bar 5 .2022-01-01 05:00"):
        audit_position("ETHUSDT", "long", "2022-01-01", frame=frame, size=1, leverage=2)


# --- a backtest's liquidations explained --------------------------------------------------------------

def _eth_run(tmp_path, leverage, trigger="mark"):
    config = RunConfig(f"{HERE.replace('test_audit.py', 'strategies_for_tests.py')}:BuyOnce",
                       symbol="ETHUSDT", start="2021-05-17", end="2021-05-21", leverage=leverage,
                       trigger=trigger, cash=10_000)
    out = tmp_path / f"run{leverage}{trigger}"
    result = run(config, out=out)
    return out, result


def test_history_audit_explains_the_liquidation(tmp_path):
    out, result = _eth_run(tmp_path, 3)
    (liq,) = result.liquidations
    audits = report_audit_history(out, plots=tmp_path / "png")
    (a,) = audits
    assert a.time == "2021-05-19 12:00" and a.symbol == "ETH/USDT:USDT" and a.side == "long"
    assert a.fill_price == pytest.approx(liq["price"]) and a.leverage == 3
    assert a.tier == 2 and a.maintenance_rate == 0.0065          # 28.5k notional: tier 2 of ETH's table
    assert a.equity == pytest.approx(a.maintenance_margin, rel=1e-9)   # at the liquidation price
    assert a.mark_price == pytest.approx(1992.48, abs=0.01) and a.last_price == 1960.0
    assert a.loss == pytest.approx(liq["loss"], rel=1e-12) and a.loss > 0
    assert a.insurance_flow > 0 and a.funding_paid > 0
    assert a.other_trigger == "last" and a.other_verdict == "same bar"
    assert open(a.plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the same run audited from the position's own numbers agrees
    one = audit_position("ETHUSDT", "long", "2021-05-17 01:00", a.entry_price, size=a.size, leverage=3)
    assert one.liquidation_time == a.time
    assert one.liquidation_price == pytest.approx(a.liquidation_price, rel=1e-9)


def test_history_audit_of_a_last_price_run_says_when_the_mark_would_have(tmp_path, capsys):
    out, _ = _eth_run(tmp_path, 2, trigger="last")
    (a,) = audit_history(out)
    assert a.time == "2021-05-19 13:00" and a.trigger == "last"
    assert a.other_trigger == "mark" and a.other_verdict in ("later", "never")
    # the mark reached this position's liquidation price four days later, when ETH fell again
    assert a.other_verdict == "later" and a.other_time == "2021-05-23 16:00"
    frame = btperp.load("ETHUSDT", start="2021-05-19 14:00", end="2021-05-23 16:00")
    assert frame["mark_low"].iloc[-1] < a.liquidation_price < frame["mark_low"].iloc[:-1].min()
    assert cli(["audit", "history", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "2021-05-19 13:00" in text and "mark: later" in text
    assert cli(["audit", "history", str(out), "--json", "--no-plots"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["other_verdict"] == "later" and rows[0]["plot"] is None


def test_history_audit_without_market_data_says_so(tmp_path):
    frame = perpkit.make_frame([100, 100, 80, 60, 40, 50])
    import backtrader as bt

    from btperp.bt import PerpHistory
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(perpkit.feed(frame))
    cerebro.addstrategy(perpkit.Script, plan={0: [("buy", {"size": 10})]})
    btperp.install(cerebro, leverage=5, tiers=perpkit.FLAT, cash=10_000)
    cerebro.addanalyzer(PerpHistory, path=str(tmp_path / "h"))
    cerebro.run()
    (a,) = report_audit_history(tmp_path / "h", plots=tmp_path / "png")
    assert a.other_verdict == "unknown" and a.plot is None
    assert "no market data for TEST/USDT:USDT" in a.notes[0]
    # long 10 at 100 (5x: margin 200), 0.5 %: LP = (200 − 1000) / (10 × 0.005 − 10) = 80.40,
    # reached by the 02:00 bar's fall from 100 to 80 (no gap)
    assert not a.gap and a.time == "2024-01-01 02:00"
    assert a.liquidation_price == pytest.approx((200 - 1000) / (10 * 0.005 - 10), rel=1e-12)
    assert a.equity == pytest.approx(a.maintenance_margin, rel=1e-9)
    assert a.maintenance_margin == pytest.approx(10 * a.liquidation_price * 0.005, rel=1e-12)


def test_history_audit_of_a_run_without_liquidations(tmp_path, capsys):
    out, result = _eth_run(tmp_path, 1)
    assert not result.liquidations
    assert audit_history(out) == []
    assert cli(["audit", "history", str(out)]) == 0
    assert "no liquidations" in capsys.readouterr().out
    assert cli(["audit", "history", str(tmp_path / "nowhere")]) == 2
