"""Files of a leverage comparison: ``results.parquet``, ``report.png`` and a self-contained
``report.html`` (the PNG embedded), each written atomically (the report layer: above
:mod:`btperp.backtest`, which knows nothing of it)."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.atomic import atomic_open, atomic_path

if TYPE_CHECKING:                        # pragma: no cover
    from ..backtest import Comparison


def write_comparison(comparison: "Comparison", out: "str | os.PathLike[str]") -> dict[str, str]:
    """``results.parquet``, ``report.png`` and ``report.html`` in ``out``; returns their paths."""
    out = Path(out)
    paths = {"results": str(write_results(comparison, out / "results.parquet"))}
    paths.update({k: str(v) for k, v in write_report(comparison, out).items()})
    return paths


def write_results(comparison: "Comparison", path: "str | os.PathLike[str]") -> Path:
    """The comparison table as Parquet, the run settings in its metadata (key ``btperp``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.Table.from_pandas(comparison.table, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"btperp"] = json.dumps({"config": comparison.config.to_dict()}, sort_keys=True,
                                 default=str).encode()
    table = table.replace_schema_metadata(meta)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def log_floor(runs, cash: float) -> float:
    """Bottom of the log axis: a decade under the smallest positive equity of any run (so a
    wiped-out account's last cents are drawn where they are), at least cash × 1e-9."""
    positive = [float(np.min(r.equity[r.equity > 0])) for r in runs if np.any(r.equity > 0)]
    low = min(positive + [cash])
    return max(10.0 ** (math.floor(math.log10(low)) - 1), cash * 1e-9)


def label_groups(points, tolerance: tuple[float, float]) -> list[tuple[float, float, list[int]]]:
    """Points closer than ``tolerance`` (x, y) share one label: ``[(x, y, [indices]), ...]``."""
    groups: list[tuple[float, float, list[int]]] = []
    for i, (x, y) in enumerate(points):
        for gx, gy, members in groups:
            if abs(x - gx) <= tolerance[0] and abs(y - gy) <= tolerance[1]:
                members.append(i)
                break
        else:
            groups.append((x, y, [i]))
    return groups


def _figure(comparison: "Comparison"):
    from ..bt.plot import use_agg
    use_agg()
    import matplotlib.pyplot as plt

    runs = comparison.runs
    fig, (curves, scatter) = plt.subplots(1, 2, figsize=(15, 6.6), gridspec_kw={"width_ratios": [2, 1]})
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(runs)))
    cfg = comparison.config
    floor = log_floor(runs, cfg.cash)
    gone = False
    for run, color in zip(runs, colors):
        label = f"{run.summary['leverage']:g}x"
        when = run.time.astype("datetime64[ms]")
        # log scale: an account at 0 (or below) cannot be drawn; it sits on the floor line
        gone = gone or bool(np.any(run.equity <= 0))
        curves.plot(when, np.where(run.equity > 0, run.equity, floor), color=color, lw=1.2, label=label)
        if run.liquidations:
            at = np.array([x["time"] for x in run.liquidations], dtype=np.int64)
            index = np.clip(np.searchsorted(run.time, at), 0, len(run.time) - 1)
            curves.scatter(at.astype("datetime64[ms]"), np.maximum(run.equity[index], floor),
                           marker="x", s=45, color=color, zorder=3)
    curves.set_yscale("log")
    curves.set_ylim(bottom=floor * 0.7)
    if gone:
        curves.axhline(floor, color="black", lw=0.8, ls="--")
        curves.annotate("0 USDT: nothing left", (0.005, floor), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=8)
    curves.set_ylabel("equity, USDT (log scale; x = liquidation)")
    curves.set_title(f"{runs[0].summary['strategy']} on {runs[0].summary['symbol']} {cfg.timeframe}, "
                     f"{cfg.margin_mode}, {cfg.cash:,.0f} USDT")
    curves.grid(True, which="both", alpha=0.25)
    points = [(r.summary["max_drawdown"] * 100, r.summary["total_return"] * 100) for r in runs]
    for (dd, ret), color in zip(points, colors):
        scatter.scatter(dd, ret, color=color, s=60)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = (max(max(xs) - min(xs), 1.0), max(max(ys) - min(ys), 1.0))
    for x, y, members in label_groups(points, (span[0] * 0.04, span[1] * 0.04)):
        text = ", ".join(f"{runs[i].summary['leverage']:g}x" for i in members)
        right = x > min(xs) + 0.7 * span[0]          # near the right edge: label to the left
        scatter.annotate(text, (x, y), textcoords="offset points", xytext=(-6 if right else 6, 5),
                         ha="right" if right else "left", fontsize=9)
    scatter.axhline(0, color="grey", lw=0.8)
    scatter.set_xlabel("max drawdown, %")
    scatter.set_ylabel("total return, %")
    scatter.set_title("return against drawdown")
    scatter.grid(True, alpha=0.25)
    handles, labels = curves.get_legend_handles_labels()
    fig.legend(handles, labels, title="leverage", loc="lower center", ncol=len(runs), fontsize=9,
               title_fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def html_cell(column: str, value) -> str:
    """One figure of a results table as HTML text (percent, leverage, number or escaped text)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if column in ("total_return", "cagr", "max_drawdown", "worst_margin_ratio"):
        return f"{value * 100:,.2f} %"
    if column == "leverage":
        return f"{value:g}x"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return html.escape(str(value))


REPORT_COLUMNS = ("leverage", "final_value", "total_return", "cagr", "max_drawdown", "sharpe",
                  "trades", "liquidations", "first_liquidation", "funding_paid", "fees",
                  "liquidation_losses", "worst_margin_ratio", "refused_orders", "refusal_reason")


def write_report(comparison: "Comparison", out: "str | os.PathLike[str]") -> dict[str, Path]:
    """``report.png`` and ``report.html`` (the table, the settings and the PNG inline)."""
    import matplotlib.pyplot as plt
    out = Path(out)
    png = out / "report.png"
    fig = _figure(comparison)
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    image = base64.b64encode(png.read_bytes()).decode()
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in REPORT_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html_cell(c, r.summary[c])}</td>" for c in REPORT_COLUMNS)
                   + "</tr>" for r in comparison.runs)
    settings = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                       for k, v in comparison.config.to_dict().items() if k != "leverage")
    first = comparison.runs[0].summary
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>btperp compare: {html.escape(first['strategy'])} on {html.escape(first['symbol'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(first['strategy'])} on {html.escape(first['symbol'])}, by leverage</h1>
<p>{html.escape(str(first['first_bar']))} to {html.escape(str(first['last_bar']))} UTC,
{first['bars']:,} bars. Liquidations on the mark price with the tier table in force on each date;
funding at each funding time; fees at the exchange's rates (btperp).</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p><img alt="equity curves and return against drawdown" src="data:image/png;base64,{image}"></p>
<h2>Settings</h2><ul>{settings}</ul>
<p>Per-run margin history: <code>history/run_id=&lt;leverage&gt;x/history.parquet</code> beside this file
(<code>btperp history show</code>).</p>
</body></html>
"""
    report = out / "report.html"
    with atomic_open(report, "w", encoding="utf-8") as handle:
        handle.write(page)
    return {"png": png, "html": report}
