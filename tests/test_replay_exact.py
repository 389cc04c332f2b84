"""The replay's smaller parts pinned to values worked out by hand (what mutation testing found
unchecked): the funding baseline, the liquidation line bar by bar, the sparse table's search."""

import math

import numpy as np
import pytest
from perpkit import table

from btperp.replay import Epoch, Market, Positions, _SparseMin, liquidation_events, liquidation_path, replay
from btperp.rules import get_rulebook
from btperp.tiers import TierTable

BINANCE, BYBIT = get_rulebook("binance-usdm"), get_rulebook("bybit")
TA, TB = TierTable.single(0.01), TierTable.single(0.02)      # one tier each: 1 %, then 2 % (cum 0)
HOUR = 3_600_000


def six_bars(prices=None) -> Market:
    """Six hourly bars; funding per unit of a long: bar 0 pays 2 at its open, bar 1 pays 0.5 later
    in the bar, bar 2 pays 1 later, bar 3 pays 3 at its open and 0.5 later, bar 4 pays 1.5 later.
    TA holds bars 0-3, TB 4-5.

    Cumulative funding after each bar (F after): 2, 2.5, 3.5, 7, 8.5, 8.5;
    through each bar's open (F at open = F after the bar before + the open events): 2, 2, 2.5, 6.5, 7, 8.5.
    """
    p = np.full(6, 100.0) if prices is None else np.asarray(prices, float)
    return Market(np.arange(6) * HOUR, mark=[p, p, p, p], last=[p, p, p, p],
                  funding_per_unit=np.array([2.0, 0.5, 1.0, 3.5, 1.5, 0.0]),
                  funding_open_per_unit=np.array([2.0, np.nan, 0.0, 3.0, 0.0, 0.0]),
                  epochs=[Epoch(0, 4, TA), Epoch(4, 6, TB)], step_ms=HOUR, symbol="T")


def test_cumulative_funding_and_the_baseline():
    m = six_bars()
    np.testing.assert_allclose(m.f_after, [2, 2.5, 3.5, 7, 8.5, 8.5])
    np.testing.assert_allclose(m.f_open, [2, 2, 2.5, 6.5, 7, 8.5])
    # opened in the bar: it does not pay the bar's open events (F at open); held from before: it
    # pays them (F after the bar before, 0 before the first bar)
    got = m.baseline(np.array([0, 0, 3, 3, 1]), np.array([False, True, True, False, False]))
    assert got.tolist() == [0.0, 2.0, 6.5, 3.5, 2.0]
    assert m.index_of([-1, 0, HOUR - 1, HOUR, 5 * HOUR + 7]).tolist() == [-1, 0, 0, 1, 5]
    with pytest.raises(ValueError) as info:
        m.prices("index")
    assert str(info.value) == "trigger must be 'mark' or 'last', got 'index'"


def test_the_liquidation_line_bar_by_bar():
    m = six_bars()
    # Binance long of 2 at 100 with 40 of margin, opened at bar 3 (the default): baseline F at
    # bar 3's open = 6.5; margin after each bar = 40 − 2 × (F after − 6.5) = 39, 36, 36; LP =
    # (margin − 2 × 100) / (2 × MMR − 2), MMR 1 % at bar 3 (TA), 2 % at bars 4 and 5 (TB)
    line = liquidation_path(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 3, 6)
    np.testing.assert_allclose(line, [(39 - 200) / (0.02 - 2), (36 - 200) / (0.04 - 2),
                                      (36 - 200) / (0.04 - 2)], rtol=1e-12)
    assert line[0] == pytest.approx(81.3131313131, rel=1e-10)
    # held from before bar 3 (it pays bar 3's open events): baseline F after bar 2 = 3.5, margins
    # 40 − 2 × 3.5 = 33, then 40 − 2 × 5 = 30
    held = liquidation_path(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 3, 6, opened=False)
    np.testing.assert_allclose(held, [(33 - 200) / (0.02 - 2), (30 - 200) / (0.04 - 2),
                                      (30 - 200) / (0.04 - 2)], rtol=1e-12)
    # a short receives what a long pays: margins 40 + 2 × (F after − 6.5); LP = (margin + 200) / (2 MMR + 2)
    short = liquidation_path(m, BINANCE, -1, 2.0, 100.0, 40.0, 5.0, 3, 5)
    np.testing.assert_allclose(short, [(41 + 200) / (0.02 + 2), (44 + 200) / (0.04 + 2)], rtol=1e-12)


def test_the_liquidation_line_of_bybit_reads_the_fee_and_the_leverage():
    """Bybit ("Liquidation Price (USDT Contract)"): LP(long) = entry − (margin − MM) / size, MM =
    value at entry × MMR + fee to close, fee to close = size × entry × (1 − 1/leverage) × fee."""
    m = six_bars()
    # long 1 at 100, 5x, 30 of margin, held from before bar 0: margin 30 − 2 = 28 after bar 0,
    # 27.5 after bar 1; TA's 1 %: MM = 1 + 1 × 100 × 0.8 × 0.001 = 1.08; LP = 100 − (28 − 1.08)
    # = 73.08, then 100 − (27.5 − 1.08) = 73.58
    line = liquidation_path(m, BYBIT, 1, 1.0, 100.0, 30.0, 5.0, 0, 2, opened=False, taker_fee=0.001)
    np.testing.assert_allclose(line, [73.08, 73.58], rtol=1e-12)
    # Bybit's own taker fee, 0.055 %: MM = 1 + 80 × 0.00055 = 1.044; at 2x: MM = 1 + 50 × 0.00055 = 1.0275
    np.testing.assert_allclose(liquidation_path(m, BYBIT, 1, 1.0, 100.0, 30.0, 5.0, 0, 2, opened=False),
                               [73.044, 73.544], rtol=1e-12)
    np.testing.assert_allclose(liquidation_path(m, BYBIT, 1, 1.0, 100.0, 30.0, 2.0, 0, 1, opened=False),
                               [100 - (28 - 1.0275)], rtol=1e-12)


def test_the_sparse_table_on_worked_cases():
    # levels of [5, 3, 4, 1]: width 1, 2 (3, 3, 1), 4 (1): a whole-array query of a power-of-two length
    g = _SparseMin(np.array([5.0, 3.0, 4.0, 1.0]))
    assert [lv.tolist() for lv in g.levels] == [[5, 3, 4, 1], [3, 3, 1], [1]]
    got = g.first_at_or_below(np.array([0, 0, 0, 2]), np.array([4, 4, 4, 3]),
                              np.array([1.0, 3.5, 0.5, 3.9]), missing=-1)
    assert got.tolist() == [3, 1, -1, -1]
    # eleven values, the only one at or below 1 last: the search skips 8 values, cannot try 4
    # (past the end), skips 2 and finds it at 10
    g = _SparseMin(np.array([9.0] * 10 + [1.0]))
    assert g.first_at_or_below(np.array([0]), np.array([11]), np.array([1.0]), missing=-1).tolist() == [10]
    # no queries, no answers
    assert g.first_at_or_below(np.array([], np.int64), np.array([], np.int64), np.array([]),
                               missing=-1).tolist() == []


def test_an_open_beyond_the_liquidation_price_after_funding_at_the_open():
    """README steps 1-2: funding at the open is paid, then the open is checked; funding later in
    the bar comes after. A Binance long of 1 at 100 with 20 of margin (5x, 1 %, cum 0), opened
    at bar 0. Bar 1 charges 5 per unit at its open (margin 15: LP = (15 − 100) / (0.01 − 1) =
    85.86) and opens at 85.50, beyond it; later in the bar the long receives 10 (margin 25: LP
    75.76), and the bar's low is its open, so only the open check catches it."""
    bar1 = np.array([100.0, 85.5, 86.0, 86.0, 86.0, 86.0])
    high = np.maximum(bar1, [100, 86, 86, 86, 86, 86])
    m = Market(np.arange(6) * HOUR, mark=[bar1, high, bar1, high], last=[bar1, high, bar1, high],
               funding_per_unit=np.array([0.0, -5.0, 0, 0, 0, 0]),
               funding_open_per_unit=np.array([0.0, 5.0, 0, 0, 0, 0]),
               epochs=[Epoch(0, 6, TA)], step_ms=HOUR)
    # integers, and a start and stop computed as floats, are taken as the numbers they are
    p = Positions.of(1, 1, 100, 20, 5, np.float64(0.0), np.float64(6.0), opened=1)
    out = replay(m, BINANCE, p)
    assert out.liquidated.tolist() == [True] and out.bar.tolist() == [1] and out.gap.tolist() == [True]
    assert out.liquidation_price[0] == pytest.approx((15 - 100) / (0.01 - 1), rel=1e-12)   # 85.86
    assert out.trigger_price[0] == 85.5                         # filled at the open
    assert out.margin_left[0] == pytest.approx(15.0) and out.funding_paid[0] == pytest.approx(5.0)
    assert out.bankruptcy_price[0] == pytest.approx(100 - 15 / 1, rel=1e-12)            # 85
    assert out.equity[0] == pytest.approx(15 + (85.5 - 100), rel=1e-12)                # 0.5
    assert out.maintenance_margin[0] == pytest.approx(85.5 * 0.01, rel=1e-12)
    assert (out.tier[0], out.maintenance_rate[0], out.last_bar[0]) == (1, 0.01, 1)
    # the same when bar 1 starts a new tier table (the position held into it is checked at its
    # open), and for a position held from before bar 1 that the replay starts at bar 1 (its
    # baseline is F after bar 0 = 0: it pays bar 1's open events too)
    split = Market(m.times, mark=m.mark, last=m.last, funding_per_unit=np.array([0.0, -5.0, 0, 0, 0, 0]),
                   funding_open_per_unit=np.array([0.0, 5.0, 0, 0, 0, 0]),
                   epochs=[Epoch(0, 1, TA), Epoch(1, 6, TA)], step_ms=HOUR)
    for market, position in ((split, Positions.of(1, 1.0, 100.0, 20.0, 5.0, 0, 6)),
                             (m, Positions.of(1, 1.0, 100.0, 20.0, 5.0, 1, 6, opened=False))):
        out = replay(market, BINANCE, position)
        assert out.bar.tolist() == [1] and out.trigger_price.tolist() == [85.5]
        assert out.liquidation_price[0] == pytest.approx((15 - 100) / (0.01 - 1), rel=1e-12)
    # Positions built field by field, without entry times, are entries at the open
    direct = Positions(*(np.array([x]) for x in (1.0, 1.0, 100.0, 20.0, 5.0)), np.array([0]),
                       np.array([6]), np.array([True]))
    assert replay(m, BINANCE, direct).bar.tolist() == [1]


def test_funding_that_moves_the_liquidation_price_into_a_lower_tier():
    """Table T of 1 % to 1,000, then 2.5 % (cum 15). A Binance long of 12 at 100 (1,200: tier 2 at
    entry) with 120 of margin, opened at bar 0, whose open charged 20 per unit (not to it: it
    opened there). Bar 1 pays it 30 per unit later in the bar: margin 120 + 12 × 30 = 480. Its
    liquidation price is then (480 − 1,200) / (12 × 0.01 − 12) = 60.61 (notional 727: tier 1;
    tier 2's line would give (480 + 15 − 1,200) / (12 × 0.025 − 12) = 60.26), and bar 2's low of
    60.40 reaches it."""
    T = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
    px = np.full(4, 100.0)
    low = np.array([100.0, 100.0, 60.4, 100.0])
    m = Market(np.arange(4) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
               funding_per_unit=np.array([20.0, -30.0, 0.0, 0.0]),
               funding_open_per_unit=np.array([20.0, 0.0, 0.0, 0.0]),
               epochs=[Epoch(0, 4, T)], step_ms=HOUR)
    out = replay(m, BINANCE, Positions.of(1, 12.0, 100.0, 120.0, 10.0, 0, 4))
    lp = (480 - 1_200) / (12 * 0.01 - 12)
    assert out.bar.tolist() == [2] and out.liquidation_price[0] == pytest.approx(lp, rel=1e-12)
    assert round(lp, 2) == 60.61 and out.tier.tolist() == [1]
    assert out.funding_paid[0] == pytest.approx(-360.0) and out.margin_left[0] == pytest.approx(480.0)
    assert out.equity[0] == pytest.approx(out.maintenance_margin[0], rel=1e-9)       # 7.27 = 727 × 1 %


def test_a_maintenance_rate_of_many_digits():
    """Hyperliquid at a max leverage of 3: l = 1 / (2 × 3) = 1/6 ("Liquidations"). A long of 1 at 100
    with 50 of margin: margin_available = 50 − 100 / 6 = 33.33, liq_price = 100 − 33.33 / (1 − 1/6)
    = 60; bar 3's low of 59 reaches it."""
    from btperp.rules.hyperliquid import Hyperliquid
    px = np.full(5, 100.0)
    low = np.array([100.0, 100.0, 100.0, 59.0, 100.0])
    m = Market(np.arange(5) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
               funding_per_unit=np.zeros(5), funding_open_per_unit=np.zeros(5),
               epochs=[Epoch(0, 5, Hyperliquid.table_for_max_leverage(3))], step_ms=HOUR)
    out = replay(m, get_rulebook("hyperliquid"), Positions.of(1, 1.0, 100.0, 50.0, 2.0, 0, 5))
    assert out.bar.tolist() == [3]
    assert out.liquidation_price[0] == pytest.approx(100 - (50 - 100 / 6) / (1 - 1 / 6), rel=1e-12)
    assert out.liquidation_price[0] == pytest.approx(60.0, rel=1e-12)


def test_positions_broadcast_whichever_argument_is_an_array():
    base = dict(side=1, size=2.0, entry_price=100.0, margin=50.0, leverage=2.0, start=0, stop=3)
    for name, values in [("side", [1, -1, 1]), ("size", [1.0, 2.0, 3.0]),
                         ("entry_price", [90.0, 100.0, 110.0]), ("margin", [10.0, 20.0, 30.0]),
                         ("leverage", [1.0, 2.0, 5.0]), ("start", [0, 1, 2]), ("stop", [3, 4, 5])]:
        p = Positions.of(**{**base, name: values})
        assert len(p) == 3 and getattr(p, name).tolist() == values, name
        others = [k for k in base if k != name]
        assert all(getattr(p, k).tolist() == [base[k]] * 3 for k in others), name
    p = Positions.of(**base)
    assert (p.side.dtype, p.start.dtype, p.stop.dtype, p.opened.dtype) == (float, np.int64, np.int64, bool)
    assert p.opened.tolist() == [True] and p.entry_t.tolist() == [0.0]


def test_a_position_is_checked_only_against_the_tables_of_its_own_bars():
    """Bars 0-1 under a 5 % table, bars 2-3 under 1 %. A long of 1 at 100 with 10 of margin opened
    at bar 2: its liquidation price is (10 − 100) / (0.01 − 1) = 90.91 there (it would be
    (10 − 100) / (0.05 − 1) = 94.74 under the earlier table), and bar 2's low of 93 does not reach it."""
    px = np.array([100.0, 100.0, 100.0, 100.0])
    low = np.array([100.0, 100.0, 93.0, 100.0])
    m = Market(np.arange(4) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
               funding_per_unit=np.zeros(4), funding_open_per_unit=np.zeros(4),
               epochs=[Epoch(0, 2, TierTable.single(0.05)), Epoch(2, 4, TA)], step_ms=HOUR)
    out = replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 10.0, 10.0, 2, 4))
    assert out.liquidated.tolist() == [False] and out.last_bar.tolist() == [3]
    # with 6 of margin, LP (6 − 100) / (0.01 − 1) = 94.95: bar 2's low, its entry bar, crosses it
    assert replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 6.0, 10.0, 2, 4)).bar.tolist() == [2]
    # the same position opened at bar 0 (5 %, LP 94.74) and held into bar 2 (1 %, LP 90.91) too
    out = replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 10.0, 10.0, 0, 4))
    assert out.liquidated.tolist() == [False]
    # with 6 of margin instead, LP (6 − 100) / (0.01 − 1) = 94.95 under 1 %: bar 2's low crosses it
    out = replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 6.0, 10.0, 0, 4))
    assert out.bar.tolist() == [2]
    assert out.liquidation_price[0] == pytest.approx((6 - 100) / (0.01 - 1), rel=1e-12)


@pytest.mark.parametrize("change, message", [
    (dict(start=-1), "each position needs 0 <= start < stop <= number of bars"),
    (dict(stop=5), "each position needs 0 <= start < stop <= number of bars"),
    (dict(start=2, stop=2), "each position needs 0 <= start < stop <= number of bars"),
    (dict(size=0.0), "sizes must be positive and sides +1 or -1"),
    (dict(side=0.5), "sizes must be positive and sides +1 or -1"),
])
def test_replay_refuses_positions_outside_its_bars_or_malformed(change, message):
    px = np.full(4, 100.0)
    m = Market(np.arange(4) * HOUR, mark=[px] * 4, last=[px] * 4, funding_per_unit=np.zeros(4),
               funding_open_per_unit=np.zeros(4), epochs=[Epoch(0, 4, TA)], step_ms=HOUR)
    args = {**dict(side=1, size=1.0, entry_price=100.0, margin=10.0, leverage=10.0, start=0, stop=4),
            **change}
    with pytest.raises(ValueError) as info:
        replay(m, BINANCE, Positions.of(**args))
    assert str(info.value) == message


# --- positions entered inside a bar (btperp.intrabar: open, first extreme, other extreme, close
# at bar times 0, 1/3, 2/3, 1; the extreme nearer the open first, the low on a tie) --------------

def one_bar_then_flat(mark, last, n=3) -> Market:
    """Bar 0 with the given (open, high, low, close) of each series, then bars at 100."""
    cols = [np.r_[m_, np.full(n - 1, 100.0)] for m_ in mark]
    lcols = [np.r_[x, np.full(n - 1, 100.0)] for x in last]
    return Market(np.arange(n) * HOUR, mark=cols, last=lcols, funding_per_unit=np.zeros(n),
                  funding_open_per_unit=np.zeros(n), epochs=[Epoch(0, n, TA)], step_ms=HOUR)


def test_a_long_entered_inside_a_bar_sees_only_the_path_after_its_entry():
    # 100 → 110 (t = 1/3) → 70 (2/3) → 105: the high is nearer the open, so it comes first
    bar = (100.0, 110.0, 70.0, 105.0)
    m = one_bar_then_flat(bar, bar)
    # entered at t = 0.8, at 70 + 0.4 × 35 = 84, after the low: the path after it stays at or
    # above 84, above its LP (8.4 − 84) / (0.01 − 1) = 76.36 (the bar's low of 70 is not its)
    out = replay(m, BINANCE, Positions.of(1, 1.0, 84.0, 8.4, 10.0, 0, 3, entry_t=0.8))
    assert out.liquidated.tolist() == [False]
    # entered at t = 0.4, at 110 − 0.2 × 40 = 102, before the low: the fall to 70 crosses its LP
    # (10.2 − 102) / (0.01 − 1) = 92.73 in the entry bar, at that price (no gap: it entered above)
    out = replay(m, BINANCE, Positions.of(1, 1.0, 102.0, 10.2, 10.0, 0, 3, entry_t=0.4))
    assert out.bar.tolist() == [0] and out.gap.tolist() == [False]
    assert out.trigger_price[0] == pytest.approx((10.2 - 102) / (0.01 - 1), rel=1e-12)


def test_a_short_entered_inside_a_low_first_bar():
    # 100 → 90 (t = 1/3) → 120 (2/3) → 100: the low is nearer the open. A short entered at
    # t = 0.5, at 90 + 0.5 × 30 = 105, with 10.5 of margin: LP (10.5 + 105) / (0.01 + 1) = 114.36,
    # which the rise to 120 crosses (had the high come first, the path after t = 0.5 would top at 105)
    bar = (100.0, 120.0, 90.0, 100.0)
    out = replay(one_bar_then_flat(bar, bar), BINANCE,
                 Positions.of(-1, 1.0, 105.0, 10.5, 10.0, 0, 3, entry_t=0.5))
    assert out.bar.tolist() == [0]
    assert out.trigger_price[0] == pytest.approx((10.5 + 105) / (0.01 + 1), rel=1e-12)
    # entered at t = 0.9, after the high, at 120 − 0.7 × 20 = 106 with 10.6 of margin: LP
    # (10.6 + 106) / 1.01 = 115.45 is below the bar's high of 120 but above all that came after
    out = replay(one_bar_then_flat(bar, bar), BINANCE,
                 Positions.of(-1, 1.0, 106.0, 10.6, 10.0, 0, 3, entry_t=0.9))
    assert out.liquidated.tolist() == [False]


@pytest.mark.parametrize("trigger", ["mark", "last"])
def test_the_path_after_an_entry_ends_at_the_trigger_series_close(trigger):
    """Mark 100 → 90 → 110 → 95, last 100 → 90 → 110 → 100 (the low first on a tie). A long of 1
    at 104 with 6.98 of margin: LP (6.98 − 104) / (0.01 − 1) = 98. Entered at t = 0.8, the mark
    path falls from 104 to its close of 95 (liquidated at 98), the last path from 106 to 100 (not)."""
    m = one_bar_then_flat((100.0, 110.0, 90.0, 95.0), (100.0, 110.0, 90.0, 100.0))
    # with a second long opened at the open (100, 10 of margin: LP (10 − 100) / (0.01 − 1) =
    # 90.91, below the open, reached by the low of 90 on either series)
    out = replay(m, BINANCE, Positions.of(1, 1.0, [104.0, 100.0], [6.98, 10.0], 10.0, 0, 3,
                                          entry_t=[0.8, 0.0]), trigger=trigger)
    assert out.liquidated.tolist() == [trigger == "mark", True]
    if trigger == "mark":
        assert out.trigger_price[0] == pytest.approx(98.0, rel=1e-12)
    assert out.trigger_price[1] == pytest.approx((10 - 100) / (0.01 - 1), rel=1e-12)


def test_an_entry_bar_low_exactly_at_the_liquidation_price_liquidates():
    """MMR 1/16 makes the arithmetic exact: a long of 1 at 100 with 25 of margin has LP
    (100 − 25) / (1 − 1/16) = 80; a low of exactly 80 liquidates it ("reaches" is at or below),
    in its entry bar as in a later one."""
    table = TierTable.single(0.0625)
    px = np.full(3, 100.0)
    for bar in (0, 1):
        low = px.copy()
        low[bar] = 80.0
        m = Market(np.arange(3) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
                   funding_per_unit=np.zeros(3), funding_open_per_unit=np.zeros(3),
                   epochs=[Epoch(0, 3, table)], step_ms=HOUR)
        out = replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 25.0, 4.0, 0, 3))
        assert out.bar.tolist() == [bar] and out.trigger_price.tolist() == [80.0]


def test_an_open_exactly_at_the_liquidation_price():
    """Exact arithmetic again (MMR 1/16), a long of 1 at 100 with 25 of margin opened at bar 0.
    Case 1: bar 1 charges 7.5 at its open (margin 17.5: LP (100 − 17.5) / (15/16) = 88) and opens
    at exactly 88; later the long receives 10 (margin 27.5: LP 77.33): liquidated at the open, at
    88, a gap. Case 2: no funding at the open (LP 80), the long pays 7.5 later in the bar (LP 88):
    the bar opening at 88 is already at it, so it is filled at the open, flagged as a gap."""
    table = TierTable.single(0.0625)
    o = np.array([100.0, 88.0, 100.0])
    h = np.array([100.0, 90.0, 100.0])
    for per_unit, at_open in (([0.0, -2.5, 0.0], [0.0, 7.5, 0.0]), ([0.0, 7.5, 0.0], [0.0, 0.0, 0.0])):
        m = Market(np.arange(3) * HOUR, mark=[o, h, o, h], last=[o, h, o, h],
                   funding_per_unit=np.array(per_unit), funding_open_per_unit=np.array(at_open),
                   epochs=[Epoch(0, 3, table)], step_ms=HOUR)
        out = replay(m, BINANCE, Positions.of(1, 1.0, 100.0, 25.0, 4.0, 0, 3))
        assert out.bar.tolist() == [1] and out.gap.tolist() == [True] and out.gap.dtype == bool
        assert out.liquidation_price.tolist() == [88.0] and out.trigger_price.tolist() == [88.0]
        assert out.margin_left.tolist() == [17.5]


def test_bybit_liquidated_at_the_open_with_its_fee_to_close():
    """Bybit ("Liquidation Price", "Bankruptcy Price (USDT Contract)"), fee 0.1 %: a long of 1 at
    100, 5x, 20 of margin; fee to close 1 × 100 × (1 − 1/5) × 0.001 = 0.08, MM = 1 + 0.08 = 1.08.
    Bar 1 charges 5 at its open (margin 15: LP = 100 − (15 − 1.08) = 86.08) and opens at 85.50;
    later the long receives 10 (LP 76.08), and the low is the open. Taken over at the bankruptcy
    price, where the equity is the reserved fee: 100 − (15 − 0.08) = 85.08."""
    bar1 = np.array([100.0, 85.5, 86.0, 86.0])
    high = np.array([100.0, 86.0, 86.0, 86.0])
    m = Market(np.arange(4) * HOUR, mark=[bar1, high, bar1, high], last=[bar1, high, bar1, high],
               funding_per_unit=np.array([0.0, -5.0, 0, 0]), funding_open_per_unit=np.array([0.0, 5.0, 0, 0]),
               epochs=[Epoch(0, 4, TA)], step_ms=HOUR)
    out = replay(m, BYBIT, Positions.of(1, 1.0, 100.0, 20.0, 5.0, 0, 4), taker_fee=0.001)
    assert out.bar.tolist() == [1] and out.trigger_price.tolist() == [85.5]
    assert out.liquidation_price[0] == pytest.approx(86.08, rel=1e-12)
    assert out.bankruptcy_price[0] == pytest.approx(85.08, rel=1e-12)
    assert out.maintenance_margin[0] == pytest.approx(1.08, rel=1e-12)     # at entry, whatever the price


def test_the_outcome_of_positions_never_liquidated_and_of_two_tables():
    """Bars 0-1 under 5 %, 2-3 under 1 %; each bar's long funding 1 per unit later in the bar."""
    px = np.full(4, 100.0)
    low = np.array([100.0, 96.0, 93.0, 100.0])
    m = Market(np.arange(4) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
               funding_per_unit=np.ones(4), funding_open_per_unit=np.zeros(4),
               epochs=[Epoch(0, 2, TierTable.single(0.05)), Epoch(2, 4, TA)], step_ms=HOUR)
    # A: long 1 at 100, 9 of margin, held from before bar 0 (its baseline: 0): after bar 0 8 left,
    #    LP (8 − 100) / (0.05 − 1) = 96.84, reached by bar 1's low of 96 (margin 7 after its
    #    funding: LP (7 − 100) / 0.95 = 97.89, at 0.05 × 97.89 of MM).
    # B: long 1 at 100, 10 of margin, opened at bar 2 (baseline F at bar 2's open = 2): after bar 2,
    #    9 left, LP (9 − 100) / (0.01 − 1) = 91.92, not reached by 93: after bar 3, 8 left.
    # C: short 1 at 100, 30 of margin, opened at bar 1 (baseline 1): receives 1 a bar, 33 at the end.
    out = replay(m, BINANCE, Positions.of([1, 1, -1], 1.0, 100.0, [9.0, 10.0, 30.0], 10.0,
                                          [0, 2, 1], 4, opened=[False, True, True]))
    assert out.liquidated.tolist() == [True, False, False]
    assert out.bar.tolist() == [1, -1, -1] and out.tier.tolist() == [1, -1, -1]
    assert out.liquidation_price[0] == pytest.approx((7 - 100) / (0.05 - 1), rel=1e-12)
    assert out.maintenance_rate[0] == 0.05
    assert out.maintenance_margin[0] == pytest.approx(0.05 * (7 - 100) / (0.05 - 1), rel=1e-12)
    assert out.margin_left.tolist() == pytest.approx([7.0, 8.0, 33.0])
    assert out.funding_paid.tolist() == pytest.approx([2.0, 2.0, -3.0])
    assert out.last_bar.tolist() == [1, 3, 3]
    assert np.isnan(out.liquidation_price[1:]).all() and np.isnan(out.maintenance_rate[1:]).all()
    # and one liquidated in each table: B with 6 of margin (LP (5 − 100) / (0.01 − 1) = 95.96 after
    # bar 2's funding, under 1 %, reached by 93)
    out = replay(m, BINANCE, Positions.of([1, 1], 1.0, 100.0, [9.0, 6.0], 10.0, [0, 2], 4,
                                          opened=[False, True]))
    assert out.bar.tolist() == [1, 2] and out.maintenance_rate.tolist() == [0.05, 0.01]
    assert out.liquidation_price[1] == pytest.approx((5 - 100) / (0.01 - 1), rel=1e-12)
    assert out.maintenance_margin[1] == pytest.approx(0.01 * (5 - 100) / (0.01 - 1), rel=1e-12)


def test_a_position_no_price_liquidates_until_funding_drains_it():
    """Table 1 % to 1,000, 2.5 % (cum 15) to 5,000, 5 % (cum 140) above. A 1x long of 10,000 at 1
    (10,000 of margin: no positive price liquidates it) pays 0.1 per unit at bar 1's open and 0.4
    at bar 2's. After the first, 9,000 of margin: LP = (9,000 + 15 − 10,000) / (250 − 10,000) =
    0.10103 (notional 1,010: tier 2), which bar 1's low of 0.1 reaches (tier 3's line would be
    (9,000 + 140 − 10,000) / (500 − 10,000) = 0.0905, not reached)."""
    T = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
    px = np.ones(3)
    low = np.array([1.0, 0.1, 1.0])
    m = Market(np.arange(3) * HOUR, mark=[px, px, low, px], last=[px, px, low, px],
               funding_per_unit=np.array([0.0, 0.1, 0.4]), funding_open_per_unit=np.array([0.0, 0.1, 0.4]),
               epochs=[Epoch(0, 3, T)], step_ms=HOUR)
    out = replay(m, BINANCE, Positions.of(1, 10_000.0, 1.0, 10_000.0, 1.0, 0, 3))
    assert out.bar.tolist() == [1] and out.tier.tolist() == [2]
    assert out.liquidation_price[0] == pytest.approx((9_000 + 15 - 10_000) / (250 - 10_000), rel=1e-12)


def test_a_market_refuses_what_it_cannot_replay():
    from btperp.errors import DataError
    px = [100.0, 100.0, 100.0]

    def market(n=3, mark=None, last=None, epochs=None, **kw):
        return Market(np.arange(n) * HOUR, mark=mark or [px[:n]] * 4, last=last or [px[:n]] * 4,
                      funding_per_unit=np.zeros(n), funding_open_per_unit=np.zeros(n),
                      epochs=epochs if epochs is not None else [Epoch(0, n, TA)], step_ms=HOUR, **kw)

    with pytest.raises(DataError) as info:
        market(0, symbol="T")
    assert str(info.value) == "T: no bars to replay"
    one = market(1, symbol="T")                               # one bar is a market
    assert len(one) == 1 and one.symbol == "T" and market().symbol == ""
    assert market(mark=[[0.5, 0.25, 2.0]] * 4).mark[2].tolist() == [0.5, 0.25, 2.0]   # prices below 1
    with pytest.raises(DataError) as info:
        market(last=[px, px, px, px[:2]], symbol="T")
    assert str(info.value) == "T: last_close has 2 values for 3 bars"
    for series, label in (("mark", "open"), ("mark", "high"), ("last", "low"), ("last", "close")):
        bad = [px, px, px, px]
        bad[("open", "high", "low", "close").index(label)] = [100.0, 100.0, 0.0]
        with pytest.raises(DataError) as info:
            market(**{series: bad}, symbol="T")
        assert str(info.value) == (f"T: {series} {label} price 0.0 at bar 2 (1970-01-01 02:00); the "
                                   f"replay needs a price in every bar (at 1970-01-01 02:00)")
        assert info.value.timestamp == "1970-01-01 02:00"
    for epochs in ([], [Epoch(1, 3, TA)], [Epoch(0, 2, TA)], [Epoch(0, 1, TA), Epoch(2, 3, TA)]):
        with pytest.raises(ValueError) as info:
            market(epochs=epochs)
        assert str(info.value) == "epochs must partition the bars [0, n)"
    # funding NaN is no event
    m = Market(np.arange(3) * HOUR, mark=[px] * 4, last=[px] * 4,
               funding_per_unit=np.array([np.nan, 1.0, np.nan]),
               funding_open_per_unit=np.array([np.nan, np.nan, np.nan]),
               epochs=[Epoch(0, 3, TA)], step_ms=HOUR)
    assert m.f_after.tolist() == [0.0, 1.0, 1.0] and m.f_open.tolist() == [0.0, 0.0, 1.0]


def test_liquidation_events_with_its_defaults():
    """six_bars with bar 2's mark low at 80. A Binance long of 2 at 100, 40 of margin, 5x, opened
    at bar 0 (the default: it does not pay bar 0's open events): funding F after − F at bar 0's
    open = 2.5 − 2 through bar 1, and bar 2's events (1 per unit) with it: paid 2 × 1.5 = 3, margin
    37. LP = (37 − 200) / (2 × 0.01 − 2) = 82.3232 (TA, 1 %), reached by the low of 80; filled at
    the bankruptcy price 100 − 37 / 2 = 81.5 (the default policy); the insurance fund takes the
    equity at the trigger, 37 + 2 × (82.3232 − 100) = 1.6465 (= MM, 1 % of 164.65). A short of the
    same is never liquidated and receives 2 × (8.5 − 2) = 13 over the six bars."""
    p = np.full(6, 100.0)
    low = p.copy()
    low[2] = 80.0
    m = Market(np.arange(6) * HOUR, mark=[p, p, low, p], last=[p, p, p, p],
               funding_per_unit=np.array([2.0, 0.5, 1.0, 3.5, 1.5, 0.0]),
               funding_open_per_unit=np.array([2.0, np.nan, 0.0, 3.0, 0.0, 0.0]),
               epochs=[Epoch(0, 4, TA), Epoch(4, 6, TB)], step_ms=HOUR, symbol="T")
    long = liquidation_events(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 0, 6)
    assert (long.closed, long.funding_paid, long.margin_left, long.size_left, long.last_bar) == (True, 3.0, 37.0, 0.0, 2)
    (e,) = long.events
    lp = (37 - 200) / (0.02 - 2)
    assert (e.bar, e.partial, e.gap, e.size, e.remaining, e.tier) == (2, False, False, 2.0, 0.0, 1)
    assert e.trigger_price == pytest.approx(lp, rel=1e-12) and round(lp, 4) == 82.3232
    assert e.fill_price == e.bankruptcy_price == 81.5 and e.pnl == -37.0
    assert e.maintenance_margin == pytest.approx(0.01 * 2 * lp, rel=1e-12)
    assert e.insurance_flow == pytest.approx(37 + 2 * (lp - 100), rel=1e-9) == pytest.approx(1.6465, abs=1e-4)
    short = liquidation_events(m, BINANCE, -1, 2.0, 100.0, 40.0, 5.0, 0, 6)
    assert (short.events, short.closed, short.funding_paid, short.margin_left, short.size_left,
            short.last_bar) == ((), False, -13.0, 53.0, 2.0, 5)
    # held from before bar 0 (opened=False) it pays bar 0's open events too: 2 × 2 more
    assert liquidation_events(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 0, 6, False).funding_paid == 7.0
    # the fee defaults are the rulebook's: Bybit's taker fee is in its maintenance margin
    bybit = liquidation_events(m, BYBIT, 1, 2.0, 100.0, 40.0, 5.0, 0, 6)
    explicit = liquidation_events(m, BYBIT, 1, 2.0, 100.0, 40.0, 5.0, 0, 6, taker_fee=BYBIT.taker_fee,
                                  fee_rate=BYBIT.liquidation_fee_rate)
    free = liquidation_events(m, BYBIT, 1, 2.0, 100.0, 40.0, 5.0, 0, 6, taker_fee=0.0)
    assert bybit.events == explicit.events and bybit.events[0].trigger_price > free.events[0].trigger_price


def _six_bars_low_at_2():
    p = np.full(6, 100.0)
    low = p.copy()
    low[2] = 80.0
    return Market(np.arange(6) * HOUR, mark=[p, p, low, p], last=[p, p, p, p],
                  funding_per_unit=np.array([2.0, 0.5, 1.0, 3.5, 1.5, 0.0]),
                  funding_open_per_unit=np.array([2.0, np.nan, 0.0, 3.0, 0.0, 0.0]),
                  epochs=[Epoch(0, 4, TA), Epoch(4, 6, TB)], step_ms=HOUR, symbol="T")


def test_liquidation_events_pass_the_fill_policy_fees_and_reserve_through():
    """The long of test_liquidation_events_with_its_defaults (margin 37 at bar 2, LP 82.3232, MM
    1 % × 2 × LP = 1.6465):
    * fee policy, liquidation fee 0.5 %: filled at the trigger, fee 0.005 × 2 × 82.3232 = 0.8232 to
      the insurance fund, PnL 2 × (82.3232 − 100) = −35.3535;
    * Bybit, its taker fee 0.055 % reserved at the bankruptcy price of 5x, 100 × (1 − 1/5) = 80:
      reserve 2 × 80 × 0.00055 = 0.088; MM at entry value 2 × 100 × 1 % + 0.088 = 2.088;
      LP = 100 − (37 − 2.088) / 2 = 82.544; bankruptcy = 100 + (0.088 − 37) / 2 = 81.544, the fill;
      PnL 2 × (81.544 − 100) = −36.912, fee 0.088, the insurance fund 2.088 − 0.088 = 2."""
    m = _six_bars_low_at_2()
    lp = (37 - 200) / (0.02 - 2)
    (e,) = liquidation_events(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 0, 6, policy="fee", fee_rate=0.005).events
    assert e.fill_price == pytest.approx(lp, rel=1e-12) and e.bankruptcy_price == 81.5
    assert e.fee == e.insurance_flow == pytest.approx(0.005 * 2 * lp, rel=1e-12)
    assert e.pnl == pytest.approx(2 * (lp - 100), rel=1e-12)
    assert e.maintenance_margin == pytest.approx(0.01 * 2 * lp, rel=1e-12) == pytest.approx(1.6465, abs=1e-4)
    (b,) = liquidation_events(m, BYBIT, 1, 2.0, 100.0, 40.0, 5.0, 0, 6).events
    assert b.trigger_price == pytest.approx(82.544, rel=1e-12)
    assert b.fill_price == b.bankruptcy_price == pytest.approx(81.544, rel=1e-12)
    assert b.pnl == pytest.approx(-36.912, rel=1e-12) and b.fee == pytest.approx(0.088, rel=1e-12)
    assert b.maintenance_margin == pytest.approx(2.088, rel=1e-12)
    assert b.insurance_flow == pytest.approx(2.0, rel=1e-9)


def test_a_first_hyperliquid_step_at_bar_1_is_not_in_a_cooldown_and_keeps_the_lot_size():
    """Hyperliquid ("Liquidations"), 20x table (MM 2.5 %): long 2,000 at 100, 10x, margin 20,000,
    no funding: LP = (20,000 − 200,000) / (2,000 × 0.025 − 2,000) = 92.3077, reached by bar 1's low
    of 92 (the remainder's LP, 91.716, is not). The first trigger steps 20 % (400), leaving 1,600
    and a margin of 20,000 − 400 × (100 − 92.3077) = 16,923.08, ratio 0.8; with a lot of 300 the
    step closes 300 (the 400 rounded down), leaving 17,692.31 at a ratio of 0.85."""
    from btperp.rules.hyperliquid import Hyperliquid
    hl = Hyperliquid.table_for_max_leverage(20)
    q = np.full(4, 100.0)
    low = q.copy()
    low[1] = 92.0
    z = np.zeros(4)
    m = Market(np.arange(4) * HOUR, mark=[q, q, low, q], last=[q, q, q, q], funding_per_unit=z,
               funding_open_per_unit=z, epochs=[Epoch(0, 4, hl)], step_ms=HOUR)
    lp = (20_000 - 200_000) / (2_000 * 0.025 - 2_000)
    rb = get_rulebook("hyperliquid")
    out = liquidation_events(m, rb, 1, 2_000.0, 100.0, 20_000.0, 10.0, 0, 4, taker_fee=0.0)
    (s,) = out.events
    assert (s.bar, s.partial, s.size, s.remaining) == (1, True, 400.0, 1_600.0)
    assert s.trigger_price == pytest.approx(lp, rel=1e-12) and s.margin_ratio == pytest.approx(0.8, rel=1e-12)
    assert (out.closed, out.size_left, out.last_bar) == (False, 1_600.0, 3)
    assert out.margin_left == pytest.approx(20_000 - 400 * (100 - lp), rel=1e-12)
    lots = liquidation_events(m, rb, 1, 2_000.0, 100.0, 20_000.0, 10.0, 0, 4, taker_fee=0.0, lot_size=300)
    assert (lots.events[0].size, lots.size_left) == (300.0, 1_700.0)
    assert lots.events[0].margin_ratio == pytest.approx(0.85, rel=1e-12)


def test_liquidation_events_of_a_position_entered_after_the_bars_low():
    """Entered in bar 2 at t = 0.9, after the low of 80 (path: open, the low nearer the open at 1/3,
    the high at 2/3, the close), it never sees a price below 100 and is not liquidated; it pays
    F after bar 5 − F at bar 2's open = 8.5 − 2.5 per unit: 12, leaving 28. Entered at the open
    (t = 0), the low liquidates it in bar 2."""
    m = _six_bars_low_at_2()
    late = liquidation_events(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 2, 6, True, 0.9)
    assert (late.events, late.closed, late.funding_paid, late.margin_left, late.size_left) == ((), False, 12.0, 28.0, 2.0)
    assert liquidation_events(m, BINANCE, 1, 2.0, 100.0, 40.0, 5.0, 2, 6, True, 0.0).events[0].bar == 2


def _hyperliquid_market(lows, funding=(0.0, 0.0, 0.0, 0.0)):
    """Four hourly bars at 100 with these mark lows; funding per unit at each bar's open."""
    from btperp.rules.hyperliquid import Hyperliquid
    q = np.full(4, 100.0)
    f = np.asarray(funding, float)
    return Market(np.arange(4) * HOUR, mark=[q, q, np.asarray(lows, float), q], last=[q, q, q, q],
                  funding_per_unit=f, funding_open_per_unit=f,
                  epochs=[Epoch(0, 4, Hyperliquid.table_for_max_leverage(20))], step_ms=HOUR)


def test_hyperliquid_steps_in_the_replay_the_cooldown_the_last_bar_and_funding_between_steps():
    """Long 2,000 at 100, 10x, margin 20,000, Hyperliquid 20x table (MM 2.5 % of notional), no fee.
    LP(m, s) = (m − 100 s) / (0.025 s − s).
    * bar 1's low 91.5 reaches LP(20,000, 2,000) = 92.3077: 400 closed there (MM 2,000 × 92.3077 ×
      2.5 % = 4,615.38), then the remainder's LP(16,923.08, 1,600) = 91.716 in the same bar: within
      the 30 s cooldown, the whole remainder at its bankruptcy price 100 − 16,923.08 / 1,600;
    * held to bar 1 only (stop = 2), a step in the last bar ends the replay with 1,600 open;
    * with 0.1 per unit at bars 1 and 2's opens and lows 92.3, 91.85: margin 20,000 − 200 = 19,800,
      LP 92.4103 in bar 1, 400 closed: 16,764.10; bar 2's open takes 160: 16,604.10, LP 91.9204,
      reached by 91.85 in another bar: 320 (20 %) closed there: 14,018.65 on 1,280, whose LP 91.331
      is not reached. Funding paid 200 + 160 = 360."""
    rb = get_rulebook("hyperliquid")

    def lp(m, s):
        return (m - 100 * s) / (0.025 * s - s)

    same = liquidation_events(_hyperliquid_market([100, 91.5, 100, 100]), rb, 1, 2_000.0, 100.0,
                              20_000.0, 10.0, 0, 4, taker_fee=0.0)
    step, close = same.events
    m2 = 20_000 - 400 * (100 - lp(20_000, 2_000))
    assert (step.bar, step.partial, step.size, close.bar, close.partial, close.size) == (1, True, 400.0, 1, False, 1_600.0)
    assert step.maintenance_margin == pytest.approx(2_000 * lp(20_000, 2_000) * 0.025, rel=1e-12)
    assert close.trigger_price == pytest.approx(lp(m2, 1_600), rel=1e-12)
    assert close.fill_price == pytest.approx(100 - m2 / 1_600, rel=1e-12)
    assert same.closed and same.size_left == 0.0

    last = liquidation_events(_hyperliquid_market([100, 92, 100, 100]), rb, 1, 2_000.0, 100.0, 20_000.0,
                              10.0, 0, 2, taker_fee=0.0)
    assert [e.bar for e in last.events] == [1]
    assert (last.closed, last.size_left, last.last_bar, last.funding_paid) == (False, 1_600.0, 1, 0.0)
    assert last.margin_left == pytest.approx(m2, rel=1e-12)

    funded = liquidation_events(_hyperliquid_market([100, 92.3, 91.85, 100], (0, 0.1, 0.1, 0)), rb, 1,
                                2_000.0, 100.0, 20_000.0, 10.0, 0, 4, taker_fee=0.0)
    lp1 = lp(19_800, 2_000)
    m3 = 19_800 - 400 * (100 - lp1) - 160
    lp2 = lp(m3, 1_600)
    m4 = m3 - 320 * (100 - lp2)
    assert round(lp1, 4) == 92.4103 and round(lp2, 4) == 91.9204 and round(m4, 2) == 14_018.65
    assert [(e.bar, e.partial, e.size, e.remaining) for e in funded.events] == [(1, True, 400.0, 1_600.0),
                                                                                 (2, True, 320.0, 1_280.0)]
    assert funded.events[1].trigger_price == pytest.approx(lp2, rel=1e-12)
    assert (funded.closed, funded.size_left, funded.last_bar) == (False, 1_280.0, 3)
    assert funded.funding_paid == pytest.approx(360.0, rel=1e-12)
    assert funded.margin_left == pytest.approx(m4, rel=1e-12)
