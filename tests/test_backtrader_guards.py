"""Guards: the versions and backtrader internals btperp relies on. A failure here means an upgrade
changed something the broker depends on; read the test before touching the pin."""

import backtrader as bt


def test_backtrader_is_the_pinned_version():
    assert bt.__version__ == "1.9.78.123"
