"""ADL exposure (issue #19): cascade bars estimated from last vs mark extremes and volume
(btperp.cascade), the rank rule, and the audit of a run's history (btperp.audit.adl_exposure,
``btperp audit adl``). An indicator: every expected value is written out by hand or read off the
bundled data."""

import json
import math
import shutil

import backtrader as bt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.audit import adl_exposure
from btperp.cascade import cascades, ranked_high, trailing_median_ratio
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.io.loader import load, load_detail

pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")

F, T = False, True


# --- the cascade mask on hand-made bars ------------------------------------------------------------

# mark high 102 and mark low 100 throughout: a sweep is (100 − low) / 100 below, (high − 102) / 102 above
HIGH = [102.0, 102.0, 103.53, 102.0, 102.0, 102.204, 102.51, 102.51]
LOW = [100.0, 98.9, 100.0, 99.6, 99.8, 100.0, 100.0, 100.0]
MARK_HIGH = [102.0] * 8
MARK_LOW = [100.0] * 8
VOLUME = [10.0, 10.0, 10.0, 50.0, 60.0, 10.0, 200.0, 100.0]


def test_cascade_bars_by_hand():
    c = cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, VOLUME, volume_window=4)
    assert c.sweep_below == pytest.approx([0, 0.011, 0, 0.004, 0.002, 0, 0, 0])
    assert c.sweep_above == pytest.approx([0, 0, 0.015, 0, 0, 0.002, 0.005, 0.005])
    # volume over the median of the (up to) 4 bars before: [10], [10, 10], [10, 10, 10],
    # [10, 10, 10, 50], [10, 10, 50, 60], [10, 50, 60, 10], [50, 60, 10, 200]
    assert np.isnan(c.volume_ratio[0])
    assert c.volume_ratio[1:] == pytest.approx([1, 1, 5, 6, 10 / 30, 200 / 30, 100 / 55])
    # bar 1: 1.1 % below the mark (sweep rule); bar 3: 0.4 % below on 5x volume (volume rule);
    # bar 4: 6x volume but only 0.2 % below; bar 7: 0.5 % above on ordinary volume
    assert c.longs.tolist() == [F, T, F, T, F, F, F, F]
    # bar 2: 1.5 % above (sweep); bar 6: 0.5 % above on 6.7x volume (volume); bar 5: 0.2 % above
    assert c.shorts.tolist() == [F, F, T, F, F, F, T, F]


def test_without_volume_only_the_sweep_rule():
    c = cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, None)
    assert np.isnan(c.volume_ratio).all()
    assert c.longs.tolist() == [F, T, F, F, F, F, F, F]
    assert c.shorts.tolist() == [F, F, T, F, F, F, F, F]


def test_the_thresholds_are_parameters():
    c = cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, VOLUME, sweep=0.012, volume_multiple=6,
                 volume_sweep=0.001, volume_window=4)
    assert c.longs.tolist() == [F, F, F, F, T, F, F, F]       # 1.1 % < 1.2 %; 5x < 6x; 6x and 0.2 %
    assert c.shorts.tolist() == [F, F, T, F, F, F, T, F]


def test_a_position_is_exposed_to_the_other_sides_liquidations():
    c = cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, None)
    # bar 1: longs liquidated, exposing a short; bar 2: shorts liquidated, exposing a long
    assert c.exposes([-1, 1, 1, -1], [1, 2, 1, 2]).tolist() == [T, T, F, F]
    assert c.sweep_against([-1, 1], [1, 2]) == pytest.approx([0.011, 0.015])


def test_trailing_median_excludes_the_bar_itself():
    assert trailing_median_ratio([1.0, 3.0, 2.0, 8.0], 2).tolist()[1:] == pytest.approx([3, 1, 8 / 2.5])
    assert np.isnan(trailing_median_ratio([0.0, 5.0], 3)[1])            # a zero median: no ratio


@pytest.mark.parametrize("kwargs, field", [
    (dict(sweep=-0.01), "sweep"), (dict(sweep=float("nan")), "sweep"),
    (dict(volume_multiple=float("inf")), "volume_multiple"), (dict(volume_sweep="0.1"), "volume_sweep"),
    (dict(volume_window=0), "volume_window"), (dict(volume_window=2.5), "volume_window"),
])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(InputError) as err:
        cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, VOLUME, **kwargs)
    assert err.value.field == field


def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(InputError, match="volume"):
        cascades(HIGH, LOW, MARK_HIGH, MARK_LOW, VOLUME[:3])


# --- ranked high ----------------------------------------------------------------------------------

def test_ranked_high_among_the_profitable_rows():
    score = [0.1, 0.2, 0.3, 0.4, 0.5, math.nan, 0.9, 0.0]
    pnl = [5, 5, 5, 5, 5, 5, -1, 0]          # row 5: no published score; 6: a loss; 7: flat
    high, rank = ranked_high(score, pnl)
    assert rank[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and np.isnan(rank[5:]).all()
    assert high.tolist() == [F, F, F, T, T, F, F, F]
    high, _ = ranked_high(score, pnl, quantile=0.5)
    assert high.tolist() == [F, F, T, T, T, F, F, F]
    high, _ = ranked_high(score, pnl, min_score=0.15)          # absolute, the exchange's units
    assert high.tolist() == [F, T, T, T, T, F, F, F]


def test_each_group_is_ranked_on_its_own():
    high, rank = ranked_high([1, 2, 10, 20], [1, 1, 1, 1], ["a", "a", "b", "b"])
    assert rank == pytest.approx([0.5, 1, 0.5, 1]) and high.tolist() == [F, T, F, T]
    with pytest.raises(InputError) as err:
        ranked_high([1], [1], quantile=1.5)
    assert err.value.field == "quantile"


# --- the bundled data: 2021-05-19 -------------------------------------------------------------------

@pytest.fixture(scope="module")
def eth_crash():
    frame = load("ETHUSDT", start="2021-05-12 00:00", end="2021-05-20 00:00")
    return frame, cascades(frame["high"], frame["low"], frame["mark_high"], frame["mark_low"], frame["volume"])


def test_the_eth_wick_of_2021_05_19_is_a_cascade_of_long_liquidations(eth_crash):
    frame, c = eth_crash
    t = frame.index.get_loc(frame.index[frame.index == "2021-05-19 13:00"][0])
    # the last price wicked to 1400.73 while Binance's mark bottomed at 1764.26
    assert (frame["low"].iloc[t], round(frame["mark_low"].iloc[t], 2)) == (1400.73, 1764.26)
    assert c.sweep_below[t] == pytest.approx((1764.25818052 - 1400.73) / 1764.25818052)   # 20.6 %
    assert c.longs[t]
    # the two hours before: 1.40 % and 1.63 % below the mark on 7.7x and 8.0x volume
    assert c.longs[t - 2] and c.longs[t - 1]
    assert c.sweep_below[t - 2] == pytest.approx((2466.54983721 - 2432) / 2466.54983721)
    # the rebound in the same hour swept above the mark high too (2618 vs 2497.94: 4.8 %)
    assert c.shorts[t] and c.sweep_above[t] == pytest.approx((2618 - 2497.94317524) / 2497.94317524)
    # a quiet bar: 06:00, last low 2926.60 vs mark low 2926.81, high 3018.00 vs 3017.99
    q = t - 7
    assert str(frame.index[q]) == "2021-05-19 06:00:00+00:00"
    assert not c.longs[q] and not c.shorts[q]
    assert c.sweep_below[q] == pytest.approx((2926.81 - 2926.6) / 2926.81)


def test_the_minute_marks_agree_the_mark_never_went_near_the_wick():
    """The 1m marks of that hour (bundled detail) bottom at the hourly mark low, at 13:10."""
    detail = load_detail("ETHUSDT", "binance-usdm", "1m", start="2021-05-19 13:00", end="2021-05-19 13:59")
    assert len(detail) == 60
    assert round(detail["mark_low"].min(), 2) == 1764.26
    assert str(detail["mark_low"].idxmin()) == "2021-05-19 13:10:00+00:00"


# --- a run's history ----------------------------------------------------------------------------

class OpenOnce(bt.Strategy):
    params = (("size", 1.0),)

    def next(self):
        if len(self) == 1:
            (self.buy if self.p.size > 0 else self.sell)(size=abs(self.p.size))


def _run(path, symbol, start, end, size, **options):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed(symbol, start=start, end=end))
    cerebro.addstrategy(OpenOnce, size=size)
    btperp.install(cerebro, cash=100_000, leverage=3, history=path, **options)
    cerebro.run()
    return path


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Short 1 ETH from 2021-05-19 01:00 (filled at 3355.89) through the crash to 16:00."""
    return _run(tmp_path_factory.mktemp("short"), "ETHUSDT", "2021-05-19 00:00", "2021-05-19 16:00", -1.0)


def test_a_winning_short_is_flagged_in_the_long_liquidation_cascade(short_run):
    flagged = adl_exposure(short_run)
    assert [str(t) for t in flagged["time"]] == [
        "2021-05-19 11:00:00+00:00", "2021-05-19 12:00:00+00:00", "2021-05-19 13:00:00+00:00"]
    assert set(flagged["side"]) == {"short"} and set(flagged["liquidated_side"]) == {"long"}
    assert flagged["symbol"].tolist() == ["ETH/USDT:USDT"] * 3 and flagged["trade_id"].tolist() == [1] * 3
    assert flagged["rule"].tolist() == ["sweep+volume", "sweep+volume", "sweep"]
    wick = flagged.iloc[2]
    assert (wick["last_extreme"], round(wick["mark_extreme"], 2)) == (1400.73, 1764.26)
    assert wick["sweep"] == pytest.approx((1764.25818052 - 1400.73) / 1764.25818052)
    # in profit (entry 3355.89, mark close 2484.93), ranked 15th of the 16 profitable bars
    assert wick["unrealized_pnl"] == pytest.approx(3355.89 - 2484.93)
    assert wick["adl_rank"] == pytest.approx(15 / 16) and wick["adl_score"] > 0
    assert flagged.attrs["notes"] == []


def test_the_rank_rule_is_a_parameter(short_run):
    # the 12:00 bar is the trade's best (rank 1): only it with a quantile of 0.95
    assert [str(t)[11:16] for t in adl_exposure(short_run, quantile=0.95)["time"]] == ["12:00"]
    assert adl_exposure(short_run, sweep=0.5, volume_multiple=100).empty


def test_a_winning_long_is_flagged_in_the_short_squeeze_of_2021_07_26(tmp_path):
    """BTCUSDT's last price spiked to 48,168.60 at 01:00 while the mark high was 39,744.81."""
    flagged = adl_exposure(_run(tmp_path, "BTCUSDT", "2021-07-20 00:00", "2021-07-26 06:00", 0.1))
    squeeze = flagged[flagged["time"] == "2021-07-26 01:00"]
    assert len(squeeze) == 1
    row = squeeze.iloc[0]
    assert (row["side"], row["liquidated_side"], row["rule"]) == ("long", "short", "sweep+volume")
    assert (row["last_extreme"], round(row["mark_extreme"], 2)) == (48168.6, 39744.81)
    assert row["sweep"] == pytest.approx((48168.6 - 39744.81240014) / 39744.81240014)
    assert row["volume_ratio"] == pytest.approx(11.92, abs=0.01)
    assert len(flagged) == 1


def test_without_market_data_or_a_published_score_a_note_says_so(short_run, tmp_path):
    (tmp_path / "empty").mkdir()
    flagged = adl_exposure(short_run, datadir=tmp_path / "empty")
    assert flagged.empty and "no market data" in flagged.attrs["notes"][0]
    # the same history with no published score (Hyperliquid's): nothing ranked, a note
    table = pq.read_table(short_run / "history.parquet")
    i = table.schema.get_field_index("adl_score")
    table = table.set_column(i, table.schema.field(i), pa.array([math.nan] * table.num_rows))
    (tmp_path / "nan").mkdir()
    pq.write_table(table, tmp_path / "nan" / "history.parquet")
    shutil.copy(short_run / "events.parquet", tmp_path / "nan" / "events.parquet")
    flagged = adl_exposure(tmp_path / "nan")
    assert flagged.empty and "publishes no ADL ranking formula" in flagged.attrs["notes"][0]


def test_the_cli_prints_the_flagged_bars_and_says_it_is_an_indicator(short_run, capsys):
    assert cli(["audit", "adl", str(short_run)]) == 0
    out = capsys.readouterr().out
    assert "2021-05-19 13:00" in out and "1,400.73" in out and "1,764.26" in out and "20.61" in out
    assert "indicator, not a simulation" in out
    assert cli(["audit", "adl", str(short_run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["time"] for r in doc["flagged"]] == ["2021-05-19 11:00", "2021-05-19 12:00", "2021-05-19 13:00"]
    assert doc["rule"]["sweep"] == 0.01 and "not a simulation" in doc["indicator"]
    assert cli(["audit", "adl", "--help"]) == 0
    assert "indicator" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--sweep", "-1"], "argument --sweep: must be zero or more"),
    (["--quantile", "2"], "quantile: must be a number in [0, 1]"),
    (["--volume-window", "0"], "argument --volume-window: must be 1 or more"),
    (["--volume-window", "100001"], "volume_window: must be a whole number of bars from 1 to 100,000"),
    (["--min-score", "nan"], "argument --min-score"), (["--volume-multiple", "inf"], "argument --volume-multiple"),
])
def test_bad_input_exits_2_naming_the_argument(short_run, capsys, args, message):
    assert cli(["audit", "adl", str(short_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_folder_without_a_history_exits_2(tmp_path, capsys):
    assert cli(["audit", "adl", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no history.parquet" in err and "Traceback" not in err


def test_audit_history_mentions_the_flagged_bars(short_run, capsys):
    assert cli(["audit", "history", str(short_run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "no liquidations" in out
    assert "ADL exposure (an indicator): 3 bars" in out and f"btperp audit adl {short_run}" in out
