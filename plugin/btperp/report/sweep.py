"""A sweep's report: ``heatmap_liquidations.png``, ``heatmap_return.png``, ``survival.png`` and a
self-contained ``sweep.html`` (the PNGs inline), written atomically into the sweep's folder.

A *parameter set* is one combination of the settings that vary in the sweep other than leverage
and the date window (strategy parameters, symbol, timeframe, margin mode); its cell at a leverage
sums the liquidations of its windows and takes the median of their returns. The leverage a
parameter set *survives* is the highest leverage at which it, and every lower leverage, had no
liquidation (and no failed run) in any window.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from ..sweep.task import put_bytes
from .comparison import html_cell

SET_COLUMNS = ("symbol", "timeframe", "margin_mode")


def set_columns(table) -> list[str]:
    """The columns that vary across the sweep and define a parameter set."""
    candidates = [c for c in table.columns if c.startswith("param_")] + list(SET_COLUMNS)
    return [c for c in candidates if c in table and table[c].astype(str).nunique() > 1]


def _label(row, columns) -> str:
    parts = []
    for c in columns:
        value = row[c]
        name = c.removeprefix("param_")
        parts.append(f"{name}={value:g}" if isinstance(value, float) else
                     (str(value) if c in SET_COLUMNS else f"{name}={value}"))
    return " ".join(parts) or "all runs"


def by_parameter_set(table):
    """``(liquidations, median return, runs, survived)``: frames indexed by parameter set, columns
    the leverages, and the leverage each set survives (0: none)."""
    import pandas as pd
    columns = set_columns(table)
    frame = table.copy()
    frame["set"] = [_label(r, columns) for _, r in frame.iterrows()] if columns else "all runs"
    order = list(dict.fromkeys(frame.sort_values(columns or ["leverage"])["set"]))
    ok = frame["status"] == "ok"
    liqs = frame[ok].pivot_table(index="set", columns="leverage", values="liquidations", aggfunc="sum")
    ret = frame[ok].pivot_table(index="set", columns="leverage", values="total_return", aggfunc="median")
    failed = frame[~ok].groupby(["set", "leverage"]).size()
    levels = sorted(frame["leverage"].unique())
    liqs = liqs.reindex(index=order, columns=levels)
    ret = ret.reindex(index=order, columns=levels)
    survived = {}
    for name in order:
        best = 0.0
        for lev in levels:
            value = liqs.loc[name, lev]
            if (name, lev) in failed.index or not (value == 0):
                break
            best = lev
        survived[name] = best
    return liqs, ret, pd.Series(survived, name="survived_leverage"), columns


def _heatmap(values, title: str, cmap: str, fmt, *, centered: bool = False):
    from matplotlib.colors import TwoSlopeNorm
    import matplotlib.pyplot as plt
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.8 * cols), max(2.5, 1.2 + 0.35 * rows)))
    data = values.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(data)
    norm = None
    if centered and np.isfinite(data).any():
        lo, hi = np.nanmin(data), np.nanmax(data)
        lim = max(abs(lo), abs(hi), 1e-9)
        norm = TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)
    image = ax.imshow(masked, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xticks(range(cols), [f"{c:g}x" for c in values.columns])
    ax.set_yticks(range(rows), list(values.index), fontsize=8)
    ax.set_xlabel("leverage")
    ax.set_title(title)
    if rows * cols <= 600:
        for r in range(rows):
            for c in range(cols):
                v = data[r, c]
                shade = image.cmap(image.norm(v)) if math.isfinite(v) else (1, 1, 1, 1)
                dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                ax.text(c, r, "–" if not math.isfinite(v) else fmt(v), ha="center", va="center",
                        fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig


def _survival(survived, levels):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, max(2.5, 1.2 + 0.3 * len(survived))))
    positions = np.arange(len(survived))
    ax.barh(positions, survived.to_numpy(dtype=float), color="#4c72b0")
    ax.set_yticks(positions, list(survived.index), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("highest leverage with no liquidation at it or below, in any window")
    ax.set_title("leverage each parameter set survives")
    if len(levels) > 1 and min(levels) > 0:
        ax.set_xscale("log")
        ax.set_xlim(min(levels) / 1.5, max(levels) * 1.5)
    ax.set_xticks(levels, [f"{x:g}x" for x in levels])
    ax.minorticks_off()
    for y, v in zip(positions, survived.to_numpy(dtype=float)):
        ax.text(v if v > 0 else min(levels) / 1.45, y, f" {v:g}x" if v > 0 else " none", va="center", fontsize=8)
    ax.grid(True, axis="x", alpha=0.25)
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=100, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


TABLE_COLUMNS = ("run_id", "leverage", "start", "end", "total_return", "max_drawdown", "sharpe", "trades",
                 "liquidations", "funding_paid", "fees", "worst_margin_ratio")


def write_sweep_report(table, out: str, spec=None) -> dict[str, str]:
    """The PNGs and ``sweep.html`` of a sweep's results ``table``; returns their paths."""
    from ..bt.plot import use_agg
    use_agg()
    liqs, ret, survived, columns = by_parameter_set(table)
    levels = [float(x) for x in liqs.columns]
    windows = table[["start", "end"]].astype(str).drop_duplicates().shape[0]
    per = f" ({windows} windows: sum)" if windows > 1 else ""
    images = {
        "heatmap_liquidations.png": _png(_heatmap(liqs, f"liquidations per parameter set and leverage{per}",
                                                  "Reds", lambda v: f"{v:.0f}")),
        "heatmap_return.png": _png(_heatmap(ret * 100, "total return, %" + (
            f" (median of {windows} windows)" if windows > 1 else ""), "RdYlGn",
            lambda v: f"{v:.0f}", centered=True)),
        "survival.png": _png(_survival(survived, levels)),
    }
    paths = {name: put_bytes(out, name, data) for name, data in images.items()}
    ok = table[table["status"] == "ok"]
    failed = table[table["status"] != "ok"]
    top = ok.sort_values("total_return", ascending=False).head(20)
    shown = [c for c in (*columns, *TABLE_COLUMNS) if c in table]
    head = "".join(f"<th>{html.escape(c.removeprefix('param_').replace('_', ' '))}</th>" for c in shown)
    body = "".join("<tr>" + "".join(f"<td>{html_cell(c, r[c])}</td>" for c in shown) + "</tr>"
                   for _, r in top.iterrows())
    surv = "".join(f"<tr><td>{html.escape(name)}</td><td>{html_cell('leverage', v) if v > 0 else 'none'}</td></tr>"
                   for name, v in survived.items())
    errors = "".join(f"<tr><td>{html.escape(r['run_id'])}</td><td>{html_cell('leverage', r['leverage'])}</td>"
                     f"<td>{html.escape(str(r['error']))}</td></tr>" for _, r in failed.iterrows())
    inline = {name: base64.b64encode(data).decode() for name, data in images.items()}
    strategy = html.escape(str(table["strategy"].iloc[0]))
    settings = ""
    if spec is not None:
        settings = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                           for k, v in spec.to_dict().items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>btperp sweep: {strategy}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head><body>
<h1>Sweep of {strategy}: {len(table):,} runs</h1>
<p>{len(ok):,} complete, {len(failed):,} failed; leverages {', '.join(f'{x:g}x' for x in levels)};
{windows} date window(s). Liquidations on the mark price with the tier table in force on each date;
funding at each funding time; fees at the exchange's rates (btperp).</p>
<h2>The leverage each parameter set survives</h2>
<table><thead><tr><th>parameter set</th><th>survives up to</th></tr></thead><tbody>{surv}</tbody></table>
<img alt="leverage survived" src="data:image/png;base64,{inline['survival.png']}">
<h2>Liquidations and return by parameter set and leverage</h2>
<img alt="liquidations heatmap" src="data:image/png;base64,{inline['heatmap_liquidations.png']}">
<img alt="return heatmap" src="data:image/png;base64,{inline['heatmap_return.png']}">
<h2>Best runs by total return</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Failed runs</h2>
{'<p>none</p>' if failed.empty else f'<table><thead><tr><th>run</th><th>leverage</th><th>error</th></tr></thead><tbody>{errors}</tbody></table>'}
<h2>Settings</h2><ul>{settings}</ul>
<p>Every run: <code>results/run_id=&lt;id&gt;/result.parquet</code> beside this file (a hive-partitioned
dataset: <code>pd.read_parquet("results")</code>; <code>btperp sweep show</code>).</p>
</body></html>
"""
    paths["html"] = put_bytes(out, "sweep.html", page.encode())
    return paths


__all__ = ["write_sweep_report", "by_parameter_set", "set_columns"]
