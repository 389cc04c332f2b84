"""The backtrader adapter: feed (and, later, broker, commission info, analyzer, observer)."""

from .feed import MarketTable, PerpData, attach, feed_from_frame, load_feed

__all__ = ["PerpData", "MarketTable", "attach", "feed_from_frame", "load_feed"]
