"""The backtrader adapter: feed, broker and commission info, sizers."""

from .broker import (FundingPayment, Instrument, Liquidation, MarginCall, PerpBroker, PerpCommInfo,
                     Rejection, install)
from .feed import Detail, MarketTable, PerpData, attach, attach_detail, feed_from_frame, load_feed
from .history import PerpHistory
from .sizers import MarginSizer

__all__ = ["PerpData", "MarketTable", "Detail", "attach", "attach_detail", "feed_from_frame", "load_feed", "PerpBroker",
           "PerpCommInfo", "Instrument", "Liquidation", "FundingPayment", "MarginCall", "Rejection",
           "install", "PerpHistory", "MarginSizer"]
