"""Conservation, as a property: random price paths, orders and funding through the PerpBroker.

For every run:
* final value = initial cash + realized PnL − fees − funding + unrealized PnL (the ledger), and
  the same from the order notifications alone (relative 1e-9);
* no isolated margin and no wallet is ever negative;
* every liquidation's insurance-fund flow is explained by its gap: side × size × (trigger − fill)
  plus the liquidation fee the fund receives (a partial step's fee always goes to it);
* a partial step leaves the remainder open and margin compliant at its trigger price, and it is
  followed, when at all, by further steps or the close of the same trade.
"""

import math

import backtrader as bt
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from perpkit import Script, random_market, run, table

TIERS = table((0, 500, 0.01, 50), (500, 2000, 0.025, 20), (2000, float("inf"), 0.05, 10))


class Watched(Script):
    """Script that also checks the account after every bar."""

    def __init__(self):
        super().__init__()
        self.lowest_margin = math.inf
        self.lowest_wallet = math.inf
        self.fills = {}

    def next(self):
        broker = self.broker
        for book in broker.books:
            if book.isolated:
                self.lowest_margin = min(self.lowest_margin, book.margin)
        self.lowest_wallet = min(self.lowest_wallet, broker.wallet_balance)
        super().next()

    def notify_order(self, order):
        super().notify_order(order)
        if order.executed.size:         # Completed, or Partial then Margin (a reversal short of margin)
            self.fills[order.ref] = (order.executed.pnl, order.executed.comm)


@st.composite
def scenarios(draw):
    n = draw(st.integers(15, 50))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame = random_market(rng, n, vol=draw(st.sampled_from([0.005, 0.02, 0.05])))
    close = frame["close"].to_numpy()
    plan = {}
    for _ in range(draw(st.integers(1, 8))):
        bar = draw(st.integers(0, n - 2))
        kind = draw(st.sampled_from(["buy", "sell", "close", "limit"]))
        size = draw(st.floats(0.05, 6.0))
        if kind == "close":
            order = ("close", {})
        elif kind == "limit":
            order = (draw(st.sampled_from(["buy", "sell"])),
                     dict(size=size, price=float(close[bar]) * draw(st.floats(0.95, 1.05)),
                          exectype=bt.Order.Limit))
        else:
            order = (kind, dict(size=size))
        plan.setdefault(bar, []).append(order)
    options = dict(
        cash=draw(st.sampled_from([50.0, 200.0, 1000.0])),
        leverage=draw(st.sampled_from([1, 2, 5, 10, 25, 50])),
        margin_mode=draw(st.sampled_from(["isolated", "cross"])),
        fill_policy=draw(st.sampled_from(["bankruptcy", "fee"])),
        trigger=draw(st.sampled_from(["mark", "last"])),
        liquidation=draw(st.sampled_from(["partial", "full"])),
    )
    # larger orders in some runs: positions beyond tier 1, where partial liquidation steps in
    grow = draw(st.sampled_from([1.0, 1.0, 8.0]))
    for orders in plan.values():
        for _, kwargs in orders:
            if "size" in kwargs:
                kwargs["size"] *= grow
    return frame, plan, options


@settings(max_examples=150)
@given(scenarios())
def test_money_is_conserved(scenario):
    frame, plan, options = scenario
    strat, broker = run(frame, plan, strategy=Watched, tiers=TIERS, **options)
    cash0 = options["cash"]
    event(f"{len(broker.liquidations)} liquidations")
    event("a gap past bankruptcy" if any(r.insurance_flow < 0 for r in broker.liquidations)
          else "no gap past bankruptcy")
    event(f"{len(broker.rejections)} refused orders" if broker.rejections else "no refusals")
    event("a partial step" if any(r.partial for r in broker.liquidations) else "no partial step")
    ledger = broker.ledger()
    value = broker.getvalue()
    scale = max(cash0, abs(value), 1.0)

    assert value == pytest.approx(cash0 + ledger["realized_pnl"] - broker.fees_paid - broker.funding_paid
                                  + ledger["unrealized_pnl"], rel=1e-9, abs=1e-9 * scale)

    # from the notifications alone: PnL and commissions (funding is charged on closes) of every
    # fill, funding not yet charged, and the open position valued at the last mark close
    pos = broker.getposition(strat.data)
    upnl = pos.size * (frame["mark_close"].iloc[-1] - pos.price) if pos.size else 0.0
    pnl = sum(p for p, _ in strat.fills.values())
    comm = sum(c for _, c in strat.fills.values())
    pending_funding = sum(broker.d_credit.values())
    assert value - cash0 == pytest.approx(pnl - comm - pending_funding + upnl, rel=1e-9,
                                          abs=1e-9 * scale)
    assert broker.funding_paid == pytest.approx(sum(p.payment for p in broker.funding_payments),
                                                rel=1e-9, abs=1e-12)

    assert strat.lowest_margin >= -1e-9 * scale
    assert strat.lowest_wallet >= -1e-9 * scale and broker.wallet_balance >= -1e-9 * scale

    for r in broker.liquidations:
        sign = 1 if r.side == "long" else -1
        to_fund = r.fee if r.policy == "fee" or r.partial else 0.0
        assert r.insurance_flow == pytest.approx(sign * r.size * (r.trigger_price - r.fill_price) + to_fund,
                                                 rel=1e-9, abs=1e-9 * scale)
        assert r.loss >= -1e-9 * scale
    assert broker.insurance_fund == pytest.approx(sum(r.insurance_flow for r in broker.liquidations),
                                                  rel=1e-9, abs=1e-12)
    trades = {}
    for i, r in enumerate(broker.liquidations):
        trades.setdefault(r.position_id, []).append(r.step)
        if r.partial:
            assert options["liquidation"] == "partial" and r.tier > 1
            assert r.fill_price == r.trigger_price and r.remaining > 0 and r.size > 0
            if r.margin_ratio >= 1:         # still deficient: the rest is closed at once
                rest = broker.liquidations[i + 1]
                assert not rest.partial and rest.time == r.time and rest.position_id == r.position_id
                assert rest.size == pytest.approx(r.remaining, rel=1e-12)
        else:
            assert r.remaining == 0 and not r.margin_ratio == r.margin_ratio       # NaN
    for numbers in trades.values():         # steps 1, 2, ... then the close, per trade
        assert numbers == list(range(1, len(numbers) + 1))
