"""Money is conserved, checked against independent arithmetic (a property test).

Random markets (one or two feeds, isolated or cross, either fill policy, longs and shorts alike,
gaps, mark wicks, funding at the opens, a tier-table change in some) run through the PerpBroker.
A shadow account written here, from prices and sizes alone, replays what happened: every fill's
PnL and fee, every funding payment, every liquidation's fill, loss, fee and insurance-fund flow,
and the final wallet and value. From the broker it takes only *what* happened (which orders filled
at which bar, which positions were liquidated at which trigger price) and checks that too: fills
at the bar's open, trigger prices inside the bar's mark range, and that every liquidation was due
(the account at the bar's adverse mark extremes at or below its maintenance margin) and none was
missed.

Formulas, written out here and not taken from btperp:
* PnL of a close: side × size × (exit − entry); fee: size × price × taker rate;
* funding: signed size × (rate × mark price at the event) (Binance "Introduction to Binance Futures
  Funding Rates");
* maintenance margin: notional × MMR − cum of the notional's tier, cum written below by hand;
* liquidation: bankruptcy fill P_b = entry − side × balance / size (the position's margin
  exhausted); fee policy: close at the trigger, fee = min(rate × notional, equity there); in
  cross margin each position's share of the account's equity at the trigger prices is its
  maintenance margin's share (README "Liquidation fills");
* partial liquidation (Binance's one reducing order, README "Partial liquidation"): a position in
  tier n > 1 at the trigger price T keeps floor_n / T (its notional at the top of tier n − 1),
  the rest closes at T with the liquidation fee on it; the remainder's margin ratio at T is
  MM(kept) / (equity at T − fee); at or above 1 the rest is settled as above in the same bar.
"""

import bisect
import math
from datetime import datetime, timezone

import backtrader as bt
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from perpkit import feed, make_frame, table

import btperp
from btperp.tiers import TierHistory

# (floor, MMR, cum) by hand: cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1))
TA = ((0, 0.01, 0.0), (1_000, 0.025, 15.0), (5_000, 0.05, 140.0))      # 1,000 × 1.5 %; + 5,000 × 2.5 %
TB = ((0, 0.02, 0.0), (500, 0.04, 10.0), (3_000, 0.08, 130.0))         # 500 × 2 %; + 3,000 × 4 %
TABLE_A = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
TABLE_B = table((0, 500, 0.02, 25), (500, 3_000, 0.04, 12), (3_000, math.inf, 0.08, 10))
CHANGE_BAR = 14
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
HISTORY = TierHistory([(START, TABLE_A), (datetime(2024, 1, 1, CHANGE_BAR, tzinfo=timezone.utc),
                                          TABLE_B)], symbol="TEST/USDT:USDT")
TAKER = 0.0005
LIQ_FEE = 0.0125


def mm(tiers, notional):
    """Maintenance margin of a notional: its tier's MMR × notional − cum."""
    floor, rate, cum = tiers[bisect.bisect_right([t[0] for t in tiers], notional) - 1]
    return notional * rate - cum


@st.composite
def markets(draw):
    n = 30
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    feeds = draw(st.sampled_from([1, 2, 2]))
    sides = [draw(st.sampled_from([1, -1])) for _ in range(feeds)]
    frames = []
    for k in range(feeds):
        level = [100.0, 40.0][k]
        drift = -sides[k] * draw(st.sampled_from([0.0, 0.01, 0.02]))      # mostly against it
        steps = rng.normal(drift, draw(st.sampled_from([0.01, 0.03, 0.05])), n)
        gaps = rng.random(n) < 0.08                              # the open jumps: gaps
        jump = np.where(gaps, rng.normal(0, 0.12, n), 0.0)
        close = level * np.exp(np.cumsum(steps + jump))
        open_ = np.r_[level, close[:-1]] * np.exp(jump)
        close = np.maximum(close, 1e-3)
        basis = 1 + rng.normal(0, 0.002, n)
        mark_open, mark_close = open_ * basis, close * basis
        wick = np.abs(rng.normal(0, draw(st.sampled_from([0.02, 0.05])), (2, n)))
        mark_high = np.maximum(mark_open, mark_close) * (1 + wick[0])
        mark_low = np.minimum(mark_open, mark_close) * (1 - wick[1])
        high = np.maximum(np.maximum(open_, close), mark_high / basis)
        low = np.minimum(np.minimum(open_, close), mark_low / basis)
        funding = {int(i): float(rng.normal(0.0005, 0.004)) for i in rng.choice(n, 6, replace=False)}
        frames.append(make_frame(close, open=open_, high=high, low=low, mark_open=mark_open,
                                 mark_high=mark_high, mark_low=mark_low, mark_close=mark_close,
                                 funding=funding, symbol=f"T{k}/USDT:USDT"))
    options = dict(cash=draw(st.sampled_from([300.0, 1_000.0])),
                   leverage=draw(st.sampled_from([5, 10, 10, 20])),
                   margin_mode=draw(st.sampled_from(["isolated", "cross", "cross"])),
                   fill_policy=draw(st.sampled_from(["bankruptcy", "fee"])),
                   liquidation=draw(st.sampled_from(["partial", "partial", "full"])),
                   tiers=draw(st.sampled_from([TABLE_A, HISTORY])))
    plan = {}
    for k, side in enumerate(sides):
        # most of what the account can open, across the tier boundaries (1,000 and 5,000)
        notional = options["cash"] * options["leverage"] * draw(st.sampled_from([0.5, 0.8, 0.95])) / feeds
        plan.setdefault(0, []).append((k, side * notional / frames[k]["close"].iloc[0]))
        for _ in range(draw(st.integers(0, 2))):
            bar = draw(st.integers(2, n - 3))
            action = draw(st.sampled_from(["add", "reduce", "close", "reverse"]))
            plan.setdefault(bar, []).append((k, action))
    return frames, plan, options


class Plan(bt.Strategy):
    params = (("plan", None),)

    def next(self):
        for k, what in self.p.plan.get(len(self) - 1, []):
            data = self.datas[k]
            held = self.getposition(data).size
            if isinstance(what, float):
                (self.buy if what > 0 else self.sell)(data=data, size=abs(what))
            elif what == "close" and held:
                self.close(data=data)
            elif what == "add" and held:
                (self.buy if held > 0 else self.sell)(data=data, size=abs(held) / 2)
            elif what == "reduce" and held:
                (self.sell if held > 0 else self.buy)(data=data, size=abs(held) / 2)
            elif what == "reverse" and held:
                (self.sell if held > 0 else self.buy)(data=data, size=2 * abs(held))


class Shadow:
    """The account recomputed from prices and sizes (module docstring)."""

    def __init__(self, cash, leverage, cross, policy, frames, history):
        self.wallet = cash
        self.leverage, self.cross, self.policy = leverage, cross, policy
        self.frames, self.history = frames, history
        self.pos = [[0.0, 0.0, 0.0] for _ in frames]         # signed size, entry, isolated margin
        self.funding, self.fees = [], []
        self.scale = cash

    def tiers(self, t):
        return TB if self.history and t >= CHANGE_BAR else TA

    def fund(self, k, t):
        rate = self.frames[k]["funding_rate"].iloc[t]
        size = self.pos[k][0]
        if size and rate == rate:
            paid = size * rate * self.frames[k]["mark_open"].iloc[t]
            self.wallet -= paid
            self.pos[k][2] -= paid if not self.cross else 0.0
            self.funding.append(paid)

    def fill(self, k, size, price):
        p = self.pos[k]
        fee = abs(size) * price * TAKER
        self.wallet -= fee
        self.fees.append(fee)
        pnl = 0.0
        if p[0] and p[0] * size < 0:                         # a close (the broker splits reversals)
            assert abs(size) <= abs(p[0]) * (1 + 1e-9)
            pnl = -size * (price - p[1])
            self.wallet += pnl
            share = min(abs(size) / abs(p[0]), 1.0)
            p[2] -= p[2] * share
            p[0] += size
            if abs(p[0]) <= 1e-9 * abs(size):
                p[:] = [0.0, 0.0, 0.0]
        else:
            p[1] = (p[0] * p[1] + size * price) / (p[0] + size)
            p[0] += size
            p[2] += abs(size) * price / self.leverage if not self.cross else 0.0
        self.scale = max(self.scale, abs(p[0] * p[1]))
        return pnl, fee

    def settle(self, side, size, entry, trigger, balance):
        """(fill, pnl, fee, insurance flow, loss) of one position backed by ``balance``."""
        pnl_t = side * size * (trigger - entry)
        equity = balance + pnl_t
        if self.policy == "fee" and equity >= 0:
            fee = min(LIQ_FEE * size * trigger, equity)
            return trigger, pnl_t, fee, fee, fee - pnl_t
        fill = entry - side * balance / size
        return fill, -balance, 0.0, pnl_t + balance, balance

    def step(self, t, k, r):
        """A partial step of position ``k`` at ``r``'s trigger price (module docstring): the
        expected (fill, pnl, fee, flow, loss), size closed, size kept and the remainder's ratio."""
        tiers = self.tiers(t)
        size, entry, margin = self.pos[k]
        side, trigger = np.sign(size), r.trigger_price
        floors = [x[0] for x in tiers]
        n = bisect.bisect_right(floors, abs(size) * trigger) - 1
        assert n >= 1, "a position in tier 1 is closed whole"
        kept = floors[n] / trigger
        closed = abs(size) - kept
        pnl = side * closed * (trigger - entry)
        fee = LIQ_FEE * closed * trigger
        balance = self.wallet if self.cross else margin
        equity = balance + side * abs(size) * (trigger - entry)
        self.wallet += pnl - fee
        self.pos[k] = [side * kept, entry, 0.0 if self.cross else margin + pnl - fee]
        ratio = mm(tiers, kept * trigger) / (equity - fee)
        return (trigger, pnl, fee, fee, fee - pnl), closed, kept, ratio

    def liquidate(self, t, records):
        """Settle the liquidated positions of bar t; returns the expected (fill, pnl, fee, flow, loss)."""
        tiers = self.tiers(t)
        out = {}
        if not self.cross:
            for k, r in records.items():
                size, entry, margin = self.pos[k]
                out[k] = self.settle(np.sign(size), abs(size), entry, r.trigger_price, margin)
        else:
            legs = [k for k in range(len(self.pos)) if self.pos[k][0]]
            assert sorted(legs) == sorted(records), "a cross liquidation closes every position"
            u = {k: self.pos[k][0] * (records[k].trigger_price - self.pos[k][1]) for k in legs}
            m = {k: mm(tiers, abs(self.pos[k][0]) * records[k].trigger_price) for k in legs}
            equity = self.wallet + sum(u.values())
            total = sum(m.values())
            for k in legs:
                w = m[k] / total if total > 0 else 1 / len(legs)
                size, entry, _ = self.pos[k]
                out[k] = self.settle(np.sign(size), abs(size), entry, records[k].trigger_price,
                                     w * equity - u[k])
        for k, (_, pnl, fee, _, _) in out.items():
            self.wallet += pnl - fee
            self.pos[k] = [0.0, 0.0, 0.0]
        return out

    def margin_left(self, t, k=None, prices=None):
        """Equity − maintenance margin with each position at ``prices`` (the account in cross,
        position ``k`` in isolated margin)."""
        tiers = self.tiers(t)
        keys = [k] if k is not None else [j for j in range(len(self.pos)) if self.pos[j][0]]
        base = self.pos[k][2] if k is not None else self.wallet
        return base + sum(self.pos[j][0] * (prices[j] - self.pos[j][1])
                          - mm(tiers, abs(self.pos[j][0]) * prices[j]) for j in keys)


@settings(max_examples=80, derandomize=True, deadline=None)
@given(markets())
def test_money_is_conserved_by_independent_arithmetic(market):
    frames, plan, options = market
    cerebro = bt.Cerebro(stdstats=False)
    for f in frames:
        cerebro.adddata(feed(f))
    cerebro.addstrategy(Plan, plan=plan)
    broker = btperp.install(cerebro, taker_fee=TAKER, liquidation_fee=LIQ_FEE, **options)
    cerebro.run()

    cross = options["margin_mode"] == "cross"
    shadow = Shadow(options["cash"], options["leverage"], cross, options["fill_policy"], frames,
                    isinstance(options["tiers"], TierHistory))
    symbols = [f.attrs["symbol"] for f in frames]
    index = frames[0].index
    bar_of = {ts: i for i, ts in enumerate(index)}
    fills = {}
    for f in broker.fills:
        fills.setdefault(bar_of[f.time], []).append(f)
    liqs, steps = {}, {}
    for x in broker.liquidations:
        if x.partial:
            steps.setdefault(bar_of[x.time], []).append(x)
        else:
            liqs.setdefault(bar_of[x.time], {})[symbols.index(x.symbol)] = x
    event(f"{len(broker.liquidations)} liquidations" if broker.liquidations else "no liquidation")
    event("a gap liquidation" if any(x.at_open for x in broker.liquidations) else "no gap")
    event(f"{len(frames)} feeds, {options['margin_mode']}")
    event("short" if any(x.side == "short" for x in broker.liquidations) else "no short liquidated")
    event("a partial step" if steps else "no partial step")
    tol = dict(rel=1e-9, abs=1e-9 * max(shadow.scale, 1_000.0))

    def check_step(x, t):
        """A partial step against the shadow's (module docstring)."""
        k = symbols.index(x.symbol)
        assert options["liquidation"] == "partial" and (not cross or len(
            [p for p in shadow.pos if p[0]]) == 1), "steps only for a position alone"
        before = shadow.pos[k][0]
        lo = min(frames[k]["mark_open"].iloc[t], frames[k]["mark_low"].iloc[t])
        hi = max(frames[k]["mark_open"].iloc[t], frames[k]["mark_high"].iloc[t])
        assert lo * (1 - 1e-12) <= x.trigger_price <= hi * (1 + 1e-12)
        (fill, pnl, fee, flow, loss), closed, kept, ratio = shadow.step(t, k, x)
        assert x.size == pytest.approx(closed, **tol) and x.remaining == pytest.approx(kept, **tol)
        assert x.pnl == pytest.approx(pnl, **tol) and x.fee == pytest.approx(fee, **tol)
        assert x.fill_price == x.trigger_price == fill
        assert x.insurance_flow == pytest.approx(flow, **tol) and x.loss == pytest.approx(loss, **tol)
        assert x.margin_ratio == pytest.approx(ratio, rel=1e-7)
        assert abs(before) * x.trigger_price > 1_000 * (1 - 1e-12)      # above tier 1
        if ratio >= 1:                                    # still deficient: the rest, now
            assert k in liqs.get(t, {}) and x.time == liqs[t][k].time

    funding_seen = 0
    for t in range(len(index)):
        for k in range(len(frames)):                         # 2. funding at the open
            shadow.fund(k, t)
        records = liqs.get(t, {})
        bar_steps = steps.get(t, [])
        bar_fills = fills.get(t, [])
        filled = {symbols.index(f.symbol) for f in bar_fills}
        # a cross account liquidated at the open (step 3) before another feed's opening order
        # filled: that feed was flat at the open (had it held a position, a liquidation at the open
        # would have closed it too; a liquidation after the fills would have included it)
        first = cross and records and any(not shadow.pos[k][0] for k in filled - set(records))
        # in cross margin a step at the open comes before the fills (the wallet it sees)
        early = [x for x in bar_steps if cross and x.at_open]
        for x in early:
            check_step(x, t)
        bar_steps = [x for x in bar_steps if x not in early]
        expected = shadow.liquidate(t, records) if first else {}
        for f in bar_fills:                                   # 4. fills at the bar's open
            k = symbols.index(f.symbol)
            assert f.price == frames[k]["open"].iloc[t]
            pnl, fee = shadow.fill(k, f.size, f.price)
            assert f.pnl == pytest.approx(pnl, **tol) and f.fee == pytest.approx(fee, **tol)
        adverse = {k: frames[k]["mark_low" if shadow.pos[k][0] > 0 else "mark_high"].iloc[t]
                   for k in range(len(frames))}
        due = set(records) | {symbols.index(x.symbol) for x in bar_steps}
        if due and not first:                                 # 5. the bar's adverse extremes
            if cross:
                assert shadow.margin_left(t, prices=adverse) <= 1e-9 * shadow.scale
            else:
                for k in due:
                    assert shadow.margin_left(t, k, prices=adverse) <= 1e-9 * shadow.scale
        for x in bar_steps:                                   # partial steps, in their order
            check_step(x, t)
        if records and not first:
            expected = shadow.liquidate(t, records)
        survivors = {symbols.index(x.symbol) for x in steps.get(t, [])} - set(records)
        if survivors and not bar_fills:                       # the remainder survived the bar
            for k in survivors:
                left = (shadow.margin_left(t, prices=adverse) if cross
                        else shadow.margin_left(t, k, prices=adverse))
                assert left > -1e-9 * shadow.scale
        elif not records and not bar_fills and not steps.get(t):      # nothing due was missed
            if cross and any(p[0] for p in shadow.pos):
                assert shadow.margin_left(t, prices=adverse) > -1e-9 * shadow.scale
            elif not cross:
                for k in range(len(frames)):
                    if shadow.pos[k][0]:
                        assert shadow.margin_left(t, k, prices=adverse) > -1e-9 * shadow.scale
        for k, r in records.items():
            fill, pnl, fee, flow, loss = expected[k]
            lo = min(frames[k]["mark_open"].iloc[t], frames[k]["mark_low"].iloc[t])
            hi = max(frames[k]["mark_open"].iloc[t], frames[k]["mark_high"].iloc[t])
            assert lo * (1 - 1e-12) <= r.trigger_price <= hi * (1 + 1e-12)
            if r.at_open:
                assert r.trigger_price == frames[k]["mark_open"].iloc[t]
            assert r.fill_price == pytest.approx(fill, **tol)
            assert r.pnl == pytest.approx(pnl, **tol)
            assert r.fee == pytest.approx(fee, **tol)
            assert r.insurance_flow == pytest.approx(flow, **tol)
            assert r.loss == pytest.approx(loss, **tol)
        assert min(p[2] for p in shadow.pos) >= -1e-9 * shadow.scale
        assert shadow.wallet >= -1e-9 * shadow.scale
    paid = [p.payment for p in broker.funding_payments]
    assert paid == pytest.approx(shadow.funding, **tol)
    assert broker.wallet_balance == pytest.approx(shadow.wallet, **tol)
    upnl = sum(p[0] * (f["mark_close"].iloc[-1] - p[1]) for p, f in zip(shadow.pos, frames))
    assert broker.getvalue() == pytest.approx(shadow.wallet + upnl, **tol)
    assert broker.insurance_fund == pytest.approx(
        sum(x.insurance_flow for x in broker.liquidations), **tol)
    del funding_seen
