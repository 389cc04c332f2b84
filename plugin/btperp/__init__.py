"""btperp: exchange-accurate perpetual futures for backtrader.

Layers (each in one place):

1. pure core: :mod:`btperp.tiers`, :mod:`btperp.margin`, :mod:`btperp.funding`,
   :mod:`btperp.rules` (one rulebook per exchange), :mod:`btperp.liquidation`,
   :mod:`btperp.intrabar`, :mod:`btperp.account` (the account the broker keeps),
   :mod:`btperp.replay`, :mod:`btperp.calc`; no backtrader, no I/O;
2. backtrader adapter (:mod:`btperp.bt`: broker over :mod:`btperp.account`, commission info,
   feed, analyzer, observer);
3. I/O: :mod:`btperp.io` (datasets, tier files, atomic writes);
4. backtests and audits (:mod:`btperp.backtest`, :mod:`btperp.audit`), and above them the
   pictures and reports (:mod:`btperp.report`);
5. the ``btperp`` command line: :mod:`btperp.cli`, thin over the Python API.
"""

__version__ = "0.1.0"

from .errors import (BtperpError, BtperpWarning, DataError, InputError,  # noqa: E402
                     TierTableError)
from .margin import (MarginMode, Side, bankruptcy_price, evaluate,  # noqa: E402
                     liquidation_price)
from .rules import get_rulebook  # noqa: E402
from .tiers import Tier, TierHistory, TierTable  # noqa: E402
from .io.loader import load, resample, summary  # noqa: E402

__all__ = ["__version__", "BtperpError", "BtperpWarning", "DataError", "InputError", "TierTableError",
           "MarginMode", "Side", "bankruptcy_price", "evaluate", "liquidation_price", "get_rulebook",
           "Tier", "TierHistory", "TierTable", "load", "resample", "summary",
           "load_feed", "attach", "attach_detail", "PerpData", "PerpBroker", "install"]

_ADAPTER = {"load_feed", "attach", "attach_detail", "PerpData", "PerpBroker", "install"}


def __getattr__(name):
    """backtrader names are imported on first use, so the core and `btperp calc` start fast."""
    if name in _ADAPTER:
        from . import bt as adapter
        return getattr(adapter, name)
    raise AttributeError(f"module 'btperp' has no attribute {name!r}")
