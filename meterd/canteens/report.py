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
from numpy.typing import NDArray

from meterd.canteens.analyse import CanteenResult, UtilityResult

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.met{color:#176b2c;font-weight:bold}.miss{color:#a11;font-weight:bold}.warn{color:#a60}
img{max-width:100%;display:block}section{border-top:2px solid #888;margin-top:1.5em}
"""


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _weekly(days: NDArray[np.datetime64], values: NDArray[np.float64]
            ) -> tuple[NDArray[np.datetime64], NDArray[np.float64]]:
    """Weekly sums: daily bars of a year are unreadable at report size."""
    if len(days) <= 62:
        return days, values
    n = len(days) // 7 * 7
    return days[:n:7], np.nansum(values[:n].reshape(-1, 7), axis=1)


def canteen_chart(cr: CanteenResult) -> str:
    """Actual vs expected (top row) and CUSUM of savings (bottom row), one column per utility."""
    utils = list(cr.utilities.values())
    fig, axes = plt.subplots(2, max(len(utils), 1), figsize=(4.2 * max(len(utils), 1), 5.0),
                             squeeze=False)
    for col, r in enumerate(utils):
        d, a = _weekly(r.days, r.actual)
        _, e = _weekly(r.days, r.expected)
        ax = axes[0][col]
        ax.plot(d, e, label="expected", color="#888")
        ax.plot(d, a, label="actual", color="#1f6fb4")
        ax.set_title(f"{r.utility} ({'weekly' if len(d) < len(r.days) else 'daily'})")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        cax = axes[1][col]
        cax.plot(r.days, r.result.cusum, color="#176b2c")
        cax.axhline(0, color="#999", linewidth=0.8)
        cax.set_title(f"CUSUM of savings, {r.utility}")
        cax.tick_params(labelsize=7)
    for ax in axes.ravel():
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    fig.tight_layout()
    return _png(fig)


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


def canteen_section(cr: CanteenResult, results: list[CanteenResult], currency: str) -> str:
    utils = cr.utilities.values()
    ind = "".join(_utility_row(r, _peer_median(results, r.utility)) for r in utils)
    qual = "".join(_quality_row(r) for r in utils)
    return (
        f"<section id='{html.escape(cr.canteen.id)}'><h2>{html.escape(cr.canteen.label)}</h2>"
        "<h3>Actual against expected use; CUSUM of savings</h3>"
        f"<img alt='charts for {html.escape(cr.canteen.id)}' src='{canteen_chart(cr)}'>"
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
    sections = [canteen_section(cr, results, currency) for cr in (progress or results)]
    title = f"{html.escape(site)}: canteen savings {start} to {end} (end exclusive)"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>"
            "<p>Savings = baseline model at this period's meals, weather and calendar − actual. "
            "NMBE is positive when the baseline under-predicts. ± is the 90 % uncertainty "
            "(ASHRAE Guideline 14, autocorrelation-corrected).</p>"
            + _ranking_table(results) + "".join(sections) + "</body></html>")
