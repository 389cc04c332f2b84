"""Pictures and reports: comparison files (results.parquet, report.png, report.html), a sweep's
report (sweep.html, heatmaps, the leverage each parameter set survives) and liquidation charts.

A layer of its own, above :mod:`btperp.backtest` and :mod:`btperp.audit` (which it reads) and
beside the backtrader adapter's ``save_plot``; :mod:`btperp.io` below it only reads and writes
files. Nothing under it is imported by the layers it draws.
"""

from .audit import audit_history, plot_liquidation, plot_position
from .comparison import write_comparison, write_report, write_results
from .sweep import write_sweep_report

__all__ = ["write_comparison", "write_report", "write_results", "plot_liquidation", "plot_position",
           "audit_history", "write_sweep_report"]
