"""The monthly canteen report: one self-contained HTML page with matplotlib PNGs inlined.

Per canteen: actual against expected use, the CUSUM of savings, indicators against the baseline
and the other canteens, data quality; and a ranking of canteens on top. The page needs no
network and no files beside it, so it can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable
from datetime import date

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from meterd.canteens.analyse import CanteenResult, UtilityResult

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.met{color:#176b2c;font-weight:bold}.miss{color:#a11;font-weight:bold}.warn{color:#a60}
img{max-width:100%;display:block}section{border-top:2px solid #888;margin-top:1.5em}
"""


def _png(fig: plt.Figure, close: bool = True) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    if close:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _weekly(days: NDArray[np.datetime64], values: NDArray[np.float64]
            ) -> tuple[NDArray[np.datetime64], NDArray[np.float64]]:
    """Weekly sums: daily lines of a year are unreadable at report size."""
    if len(days) <= 62:
        return days, values
    n = len(days) // 7 * 7
    return days[:n:7], np.nansum(values[:n].reshape(-1, 7), axis=1)


def _ticks(days: NDArray[np.datetime64]) -> tuple[list[float], list[str]]:
    """About six date labels; plain numbers on the axis are much faster than date locators."""
    if not len(days):
        return [], []
    step = max(len(days) // 4, 1)
    picked = days[::step]
    return [float(d.astype(np.int64)) for d in picked], [str(d)[:10] for d in picked]


class ChartRenderer:
    """Draws every canteen's chart on one reused figure: building a figure costs more than
    drawing it, and a 50-canteen report must stay well under 30 s."""

    def __init__(self, n_cols: int) -> None:
        self.n_cols = max(n_cols, 1)
        self.fig, self.axes = plt.subplots(2, self.n_cols, figsize=(4.2 * self.n_cols, 5.0),
                                           squeeze=False)
        self.fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.12, hspace=0.45,
                                 wspace=0.28)

    def render(self, cr: CanteenResult) -> str:
        utils = list(cr.utilities.values())
        for col in range(self.n_cols):
            for ax in (self.axes[0][col], self.axes[1][col]):
                ax.clear()
                ax.set_visible(col < len(utils))
        for col, r in enumerate(utils):
            self._draw(col, r)
        return _png(self.fig, close=False)

    def _draw(self, col: int, r: UtilityResult) -> None:
        d, a = _weekly(r.days, r.actual)
        _, e = _weekly(r.days, r.expected)
        x = d.astype(np.int64).astype(float)
        ax = self.axes[0][col]
        ax.plot(x, e, label="expected", color="#888")
        ax.plot(x, a, label="actual", color="#1f6fb4")
        ax.set_title(f"{r.utility} ({'weekly' if len(d) < len(r.days) else 'daily'})",
                     fontsize=9)
        if col == 0:
            ax.legend(fontsize=7)
        cax = self.axes[1][col]
        cax.plot(r.days.astype(np.int64).astype(float), r.result.cusum, color="#176b2c")
        cax.axhline(0, color="#999", linewidth=0.8)
        cax.set_title(f"CUSUM of savings, {r.utility}", fontsize=9)
        for axis, days in ((ax, d), (cax, r.days)):
            pos, labels = _ticks(days)
            axis.set_xticks(pos, labels, rotation=20, fontsize=7)
            # Few y ticks: drawing tick labels is most of a chart's cost.
            axis.yaxis.set_major_locator(MaxNLocator(4))
            axis.tick_params(labelsize=7)

    def close(self) -> None:
        plt.close(self.fig)


def canteen_chart(cr: CanteenResult) -> str:
    """Actual vs expected (top row) and CUSUM of savings (bottom row), one column per utility."""
    renderer = ChartRenderer(len(cr.utilities))
    try:
        return renderer.render(cr)
    finally:
        renderer.close()


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def _peer_median(results: list[CanteenResult], utility: str) -> float:
    vals = [cr.utilities[utility].per_meal for cr in results if utility in cr.utilities]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.median(vals)) if vals else math.nan


def ranking(results: list[CanteenResult]) -> list[tuple[CanteenResult, float]]:
    """Canteens by mean margin over target (savings % − target %) across their utilities."""
    scored = []
    for cr in results:
        margins = [100 * (r.result.fraction - r.target) for r in cr.utilities.values()
                   if math.isfinite(r.result.fraction)]
        scored.append((cr, float(np.mean(margins)) if margins else -math.inf))
    return sorted(scored, key=lambda x: -x[1])


def _ranking_table(results: list[CanteenResult]) -> str:
    rows = []
    for i, (cr, margin) in enumerate(ranking(results), 1):
        met = sum(r.met for r in cr.utilities.values())
        rows.append(f"<tr><td>{i}. <a href='#{html.escape(cr.canteen.id)}'>"
                    f"{html.escape(cr.canteen.label)}</a></td><td>{_fmt(margin)}</td>"
                    f"<td>{met} / {len(cr.utilities)}</td></tr>")
    return ("<h2>Ranking</h2><table><tr><th>canteen</th><th>mean margin over target (pp)</th>"
            "<th>targets met</th></tr>" + "".join(rows) + "</table>")


def _utility_row(r: UtilityResult, peer: float) -> str:
    s = r.result
    verdict = "<span class='met'>met</span>" if r.met else "<span class='miss'>not met</span>"
    return (f"<tr><td>{r.utility}</td><td>{_fmt(s.actual)}</td><td>{_fmt(s.expected)}</td>"
            f"<td>{_fmt(100 * s.fraction)} ± {_fmt(100 * s.u_fraction)}</td>"
            f"<td>{_fmt(100 * r.target)}</td><td>{verdict}</td>"
            f"<td>{_fmt(100 * r.projected_fraction)}</td>"
            f"<td>{_fmt(r.per_meal, 3)}</td><td>{_fmt(r.per_meal_baseline, 3)}</td>"
            f"<td>{_fmt(peer, 3)}</td><td>{r.unit}</td><td>{_fmt(r.cost_savings, 0)}</td></tr>")


def _quality_row(r: UtilityResult) -> str:
    m = r.model
    note = "" if m.qualified else f"<span class='warn'>fallback: {html.escape(m.reason)}</span>"
    return (f"<tr><td>{r.utility}</td><td>{html.escape(' + '.join(m.terms))}</td>"
            f"<td>{_fmt(100 * m.cv_rmse)}</td><td>{_fmt(100 * m.nmbe, 3)}</td>"
            f"<td>{_fmt(m.r2, 3)}</td><td>{_fmt(100 * m.coverage)}</td>"
            f"<td>{_fmt(100 * r.coverage)}</td><td>{note}</td></tr>")


def canteen_section(cr: CanteenResult, results: list[CanteenResult], currency: str,
                    chart: str) -> str:
    utils = cr.utilities.values()
    ind = "".join(_utility_row(r, _peer_median(results, r.utility)) for r in utils)
    qual = "".join(_quality_row(r) for r in utils)
    return (
        f"<section id='{html.escape(cr.canteen.id)}'><h2>{html.escape(cr.canteen.label)}</h2>"
        "<h3>Actual against expected use; CUSUM of savings</h3>"
        f"<img alt='charts for {html.escape(cr.canteen.id)}' src='{chart}'>"
        "<h3>Savings and indicators</h3><table><tr><th>utility</th><th>actual</th>"
        "<th>expected</th><th>savings % (±90 %)</th><th>target %</th><th>verdict</th>"
        "<th>projected %</th><th>per meal</th><th>baseline per meal</th>"
        f"<th>median of canteens</th><th>unit</th><th>cost saved ({html.escape(currency)})</th>"
        f"</tr>{ind}</table>"
        "<h3>Data quality and model</h3><table><tr><th>utility</th><th>model terms</th>"
        "<th>CV(RMSE) %</th><th>NMBE %</th><th>R²</th><th>baseline coverage %</th>"
        f"<th>reporting coverage %</th><th>note</th></tr>{qual}</table></section>")


def render_html(results: list[CanteenResult], start: date, end: date, site: str,
                currency: str = "CNY", progress: Iterable[CanteenResult] | None = None) -> str:
    """The whole report page; ``progress`` may wrap ``results`` (e.g. in tqdm)."""
    renderer = ChartRenderer(max((len(cr.utilities) for cr in results), default=1))
    try:
        sections = [canteen_section(cr, results, currency, renderer.render(cr))
                    for cr in (progress or results)]
    finally:
        renderer.close()
    title = f"{html.escape(site)}: canteen savings {start} to {end} (end exclusive)"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>"
            "<p>Savings = baseline model at this period's meals, weather and calendar − actual. "
            "NMBE is positive when the baseline under-predicts. ± is the 90 % uncertainty "
            "(ASHRAE Guideline 14, autocorrelation-corrected).</p>"
            + _ranking_table(results) + "".join(sections) + "</body></html>")
