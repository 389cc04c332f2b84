"""Money is conserved in the coin for random coin-margined runs (issue #19), checked against the
inverse formulas written out here, not btperp's mirror:

* PnL of a close of c contracts: side × c × contract size × (1/entry − 1/exit) (Bybit "P&L
  Calculations (Inverse Contracts)"), the entry being the exchanges' average: total contracts /
  Σ(contracts / fill price) (its own running state here);
* fee: c × contract size / price × fee rate (taker: the plan sends market orders);
* funding: contracts × contract size × Σ rate / mark, each event at its own mark (the frame puts the
  event at the open on the mark open, a later one on the mark close), longs paying a positive rate;
* a liquidation closes at its fill price with that PnL (an isolated position's loss capped at its
  margin; the rest is the insurance fund's, recorded);
* wallet = cash + Σ PnL − Σ fees − Σ funding, and value = wallet + the open position's PnL at the
  last mark close.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from perpkit import random_market, run, table

TIERS = table((0, 5, 0.004, 125), (5, 10, 0.005, 100), (10, math.inf, 0.01, 50))


def funding_per_contract_usd(frame, i):
    """Σ rate / mark over bar i's events (per USD of face value), from the frame's events: the one at
    the open (rate = at_open / mark_open) and one later (the rest of the rate, on the mark close)."""
    at_open = frame["funding_open_per_unit"].iloc[i]
    rate = frame["funding_rate"].iloc[i]
    mo, mc = frame["mark_open"].iloc[i], frame["mark_close"].iloc[i]
    r_open = 0.0 if np.isnan(at_open) else at_open / mo
    r_later = rate - r_open
    return r_open / mo + r_later / mc


@settings(max_examples=40, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**31), exchange=st.sampled_from(["binance-coinm", "bybit-inverse"]),
       cross=st.booleans(), leverage=st.sampled_from([2, 5, 10, 20]))
def test_money_is_conserved_in_the_coin(seed, exchange, cross, leverage):
    rng = np.random.default_rng(seed)
    n = 48
    frame = random_market(rng, n, vol=0.015, symbol="BTC/USD:BTC")
    cs = 1.0 if exchange == "bybit-inverse" else 10.0
    plan = {}
    for i in sorted(rng.choice(n - 2, 8, replace=False).tolist()):
        size = float(rng.integers(1, 400)) * (10 if cs == 1 else 1)
        plan[i] = [("buy" if rng.random() < 0.5 else "sell", {"size": size})]
    cash = 10.0
    strat, b = run(frame, plan, exchange=exchange, cash=cash, leverage=leverage, tiers=TIERS,
                   contract_size=cs, margin_mode="cross" if cross else "isolated")
    fee_rate = {"binance-coinm": 0.0005, "bybit-inverse": 0.00055}[exchange]
    times = {t: i for i, t in enumerate(frame.index)}

    # replay the records in the order they happened, with the inverse formulas
    contracts, entry = 0.0, 0.0
    wallet = cash
    for r in b.account.journal:
        kind = type(r).__name__
        if kind == "Fill":
            f = b._records("fills", "fill")[b.account.fills.index(r)]
            assert f.fee == pytest.approx(abs(f.size) * cs / f.price * fee_rate, rel=1e-9)
            closing = contracts and f.size * contracts < 0
            if closing:
                side = 1.0 if contracts > 0 else -1.0
                expected = side * abs(f.size) * cs * (1 / entry - 1 / f.price)
                assert f.pnl + f.insurance_flow == pytest.approx(expected, rel=1e-9, abs=1e-12)
                contracts += f.size
                if abs(contracts) < 1e-9:
                    contracts, entry = 0.0, 0.0
            else:
                if contracts:      # an increase: the harmonic average entry
                    entry = (abs(contracts) + abs(f.size)) / (abs(contracts) / entry + abs(f.size) / f.price)
                else:
                    entry = f.price
                contracts += f.size
            wallet += f.pnl - f.fee
        elif kind == "FundingPayment":
            p = b._records("funding_payments", "funding_payment")[b.account.funding_payments.index(r)]
            assert p.size == pytest.approx(contracts)
            i = times[p.time]
            if math.isnan(p.rate):          # split around a fill: the sum is checked by the wallet
                pass
            elif p.rate == pytest.approx(frame["funding_rate"].iloc[i]):
                assert p.payment == pytest.approx(contracts * cs * funding_per_contract_usd(frame, i),
                                                  rel=1e-9, abs=1e-15)
            wallet -= p.payment
        elif kind == "Liquidation":
            x = b._records("liquidations", "liquidation")[b.account.liquidations.index(r)]
            side = 1.0 if contracts > 0 else -1.0
            assert x.side == ("long" if side > 0 else "short")
            assert x.entry_price == pytest.approx(entry, rel=1e-9)
            assert x.pnl == pytest.approx(side * x.size * cs * (1 / entry - 1 / x.fill_price),
                                          rel=1e-9, abs=1e-12)
            i = times[x.time]
            lo = frame["mark_low"].iloc[i] if side > 0 else frame["mark_open"].iloc[i]
            hi = frame["mark_open"].iloc[i] if side > 0 else frame["mark_high"].iloc[i]
            assert lo * (1 - 1e-9) <= x.trigger_price <= max(hi, frame["mark_high"].iloc[i]) * (1 + 1e-9)
            wallet += x.pnl - x.fee
            contracts -= side * x.size
            if abs(contracts) < 1e-9:
                contracts, entry = 0.0, 0.0
    assert b.wallet_balance == pytest.approx(wallet, rel=1e-9, abs=1e-12)
    assert b.wallet_balance >= -1e-12
    assert strat.position.size == pytest.approx(contracts)
    mark = frame["mark_close"].iloc[-1]
    unrealized = (math.copysign(1, contracts) * abs(contracts) * cs * (1 / entry - 1 / mark)
                  if contracts else 0.0)
    assert b.getvalue() == pytest.approx(wallet + unrealized, rel=1e-9, abs=1e-12)
