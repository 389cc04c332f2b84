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


def save_plot(cerebro, path: "str | os.PathLike[str]", *, width: float = 16, height: float = 9,
              dpi: int = 100, **plot_kwargs: Any) -> Path:
    """``cerebro.plot()`` of a finished run, saved to ``path`` (PNG, SVG or PDF by its suffix)
    without opening a window; with several strategies (optstrategy) the first is drawn."""
    use_agg()
    import matplotlib.pyplot as plt
    figures = cerebro.plot(iplot=False, **plot_kwargs)
    figure = figures[0][0]
    figure.set_size_inches(width, height)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    for group in figures:
        for fig in group:
            plt.close(fig)
    return path
