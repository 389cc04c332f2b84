"""Drop-in behaviour for existing backtrader scripts (issue 16): setcommission, sizing."""

import math
import warnings

import backtrader as bt
import pytest

import btperp
from btperp.errors import InputError
from strategies.sma_cross import SmaCross


def sma_run(setup=None, **install):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-03-31"))
    cerebro.addstrategy(SmaCross)
    broker = btperp.install(cerebro, cash=50_000, leverage=2, **install)
    if setup:
        setup(broker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cerebro.run()
    return broker


def notional(broker):
    return math.fsum(abs(f.size) * f.price for f in broker.fills)


@pytest.mark.parametrize("setup", [lambda b: b.setcommission(commission=0.001),
                                   lambda b: b.setcommission(commission=0.1, percabs=False),
                                   lambda b: b.setcommission(commission=0.001, name="BTC/USDT:USDT")])
def test_setcommission_sets_maker_and_taker_fees(setup):
    default = sma_run()
    assert default.fees_paid == pytest.approx(notional(default) * 0.0005)    # Binance's taker rate
    broker = sma_run(setup)
    assert len(broker.fills) == len(default.fills) > 4
    # fee = notional x rate (Binance "Trading Fees"): 0.1 % of every fill
    assert broker.fees_paid == pytest.approx(notional(broker) * 0.001, rel=1e-12)
    assert broker.fees_paid != pytest.approx(default.fees_paid)


def test_setcommission_for_another_name_leaves_this_feed_alone():
    default = sma_run()
    broker = sma_run(lambda b: b.setcommission(commission=0.001, name="ETHUSDT"))
    assert broker.fees_paid == pytest.approx(default.fees_paid, rel=1e-12)


@pytest.mark.parametrize("kwargs, field, hint", [
    (dict(margin=2000.0), "margin", "leverage"), (dict(mult=10), "mult", "lot_size"),
    (dict(stocklike=True), "stocklike", "futures-like"), (dict(leverage=5), "leverage", "configure"),
    (dict(commtype=bt.CommInfoBase.COMM_FIXED), "commtype", "maker_fee"),
    (dict(interest=0.05), "interest", "funding")])
def test_setcommission_refuses_what_contradicts_a_perpetual(kwargs, field, hint):
    cerebro = bt.Cerebro()
    broker = btperp.install(cerebro)
    with pytest.raises(InputError) as caught:
        broker.setcommission(commission=0.001, **kwargs)
    assert caught.value.field == field and hint in str(caught.value)
