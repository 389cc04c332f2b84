"""The replay's smaller parts pinned to values worked out by hand (what mutation testing found
unchecked): the funding baseline, the liquidation line bar by bar, the sparse table's search."""

import math

import numpy as np
import pytest
from perpkit import table

from btperp.replay import Epoch, Market, Positions, _SparseMin, liquidation_path, replay
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
