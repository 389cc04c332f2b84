"""``cerebro.plot()`` without a screen.

backtrader's plot module calls ``matplotlib.use('TKAgg')`` when it is imported, which ignores
``MPLBACKEND`` and fails (or opens windows) on a machine without a display. Selecting Agg and
importing ``matplotlib.pyplot`` first makes that later ``use`` call a no-op.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path


def use_agg() -> None:
    """Select matplotlib's Agg backend before backtrader's plot module can pick TkAgg."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (pins the backend: backtrader's use('TKAgg') is ignored)


def headless() -> bool:
    """No screen to draw on: POSIX (not macOS) without ``DISPLAY`` or ``WAYLAND_DISPLAY``."""
    return (os.name == "posix" and sys.platform != "darwin"
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))


def prepare_headless() -> None:
    """Without a screen, and before anything chose a backend, select Agg: ``cerebro.plot()`` then
    returns figures to save instead of failing on TkAgg (``btperp.install`` calls this)."""
    if headless() and "matplotlib.pyplot" not in sys.modules:
        use_agg()


#: Legends of backtrader's standard observers: their parameters (``Broker (None)``,
#: ``Trades (True)``, ``BuySell (True, 0.015)``) replaced by what the lines are under btperp.
OBSERVER_NAMES = {
    "Broker": "Account, USDT (cash = available balance, value = margin balance)",
    "Trades": "Closed trades, net PnL",
    "DataTrades": "Closed trades, net PnL",
    "BuySell": "Fills",
    "Value": "Account value (margin balance), USDT",
    "Cash": "Available balance, USDT",
}


def _no_params() -> list:
    return []


def name_observers(cerebro) -> None:
    """Readable legends for backtrader's standard observers (see :data:`OBSERVER_NAMES`)."""
    for group in getattr(cerebro, "runstrats", None) or []:
        for strategy in group:
            for observer in strategy.getobservers():
                name = OBSERVER_NAMES.get(type(observer).__name__)
                if name is not None and isinstance(observer, tuple(_standard_observers())):
                    observer.plotinfo.plotname = name
                    observer._plotlabel = _no_params


def _standard_observers():
    import backtrader as bt
    return (bt.observers.Broker, bt.observers.Trades, bt.observers.DataTrades, bt.observers.BuySell,
            bt.observers.Value, bt.observers.Cash)


class VolumeFormatter:
    """Volume axis labels with three significant digits and a K/M/G suffix (backtrader's own
    formatter truncates to integers: ``0M``, ``1M`` for crypto volumes of a few million)."""

    def __init__(self, volmax: float):
        self.volmax = volmax

    def __call__(self, y, pos=0) -> str:
        if y > self.volmax * 1.2 or y < 0:
            return ""
        for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
            if self.volmax >= divisor:
                return f"{y / divisor:.3g}{suffix}"
        return f"{y:.3g}"


def readable(figures) -> None:
    """Dates under the bottom axis of each figure, volume labels that tell values apart.

    backtrader hides the date labels of every axis but the last with ``setp(..., visible=False)``
    and shows the last one's the same way; current matplotlib redraws tick labels from the axis'
    ``labelbottom`` setting, so none show. The bottom axis gets its labels back here."""
    import matplotlib.ticker as mticker
    from backtrader.plot.formatters import MyVolFormatter
    for group in figures:
        for fig in group:
            axes = [ax for ax in fig.axes if ax.get_visible()]
            if not axes:
                continue
            bottom = min(axes, key=lambda ax: ax.get_position().y0)
            for ax in axes:
                ax.tick_params(axis="x", labelbottom=ax is bottom)
                formatter = ax.yaxis.get_major_formatter()
                if isinstance(formatter, MyVolFormatter):
                    ax.yaxis.set_major_formatter(mticker.FuncFormatter(VolumeFormatter(formatter.volmax)))
            for label in bottom.get_xticklabels():
                label.set_visible(True)
            bottom.tick_params(axis="x", labelrotation=15, labelsize=8)


def save_plot(cerebro, path: "str | os.PathLike[str]", *, width: float = 16, height: float = 9,
              dpi: int = 100, **plot_kwargs: Any) -> Path:
    """``cerebro.plot()`` of a finished run, saved to ``path`` (PNG, SVG or PDF by its suffix)
    without opening a window; with several strategies (optstrategy) the first is drawn. Dates
    on the x axis, observers named, volume labelled (:func:`readable`)."""
    use_agg()
    import matplotlib.pyplot as plt
    name_observers(cerebro)
    figures = cerebro.plot(iplot=False, **plot_kwargs)
    readable(figures)
    figure = figures[0][0]
    figure.set_size_inches(width, height)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    for group in figures:
        for fig in group:
            plt.close(fig)
    return path
