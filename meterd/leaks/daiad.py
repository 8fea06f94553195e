"""Reader for the DAIAD smart water meter trial (real hourly household series) as a flow grid.

The data (CC BY-SA 4.0, "DAIAD trial data, DAIAD project (www.daiad.eu)") is read in place from
``../shared/data/daiad/swm_trialA.zip`` and never copied into the project. Timestamps are Spanish
local time without a zone; they are kept as local wall-clock time and the grid is labelled UTC,
so night windows fall on the right local hours (DST shifts of one hour twice a year are ignored).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from meterd.analysis.hourly import FloatArray, Grid, bin_consumption


def read_daiad(path: Path) -> tuple[list[str], Grid, FloatArray]:
    """Households, hourly grid and flow matrix (m³/h, NaN = no reading) from ``swm_trialA.zip``."""
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        raw = zf.read(name).decode("utf-8")
    lines = raw.splitlines()[1:]
    cols = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=";", dtype=str,
                      usecols=(0, 1, 3), comments=None)
    users, dt, diff = cols[:, 0], cols[:, 1], cols[:, 2].astype(float)
    iso = np.char.add(np.char.add(np.char.add(np.char.add(
        np.char.add(np.char.add([s[6:10] for s in dt], "-"), [s[3:5] for s in dt]), "-"),
        [s[0:2] for s in dt]), "T"), [s[11:19] for s in dt])
    ts = iso.astype("datetime64[s]").astype(np.int64).astype(float)
    order = np.lexsort((ts, users))
    users, ts, diff = users[order], ts[order], diff[order]
    t0 = int(ts.min() // 86400 * 86400)
    grid = Grid(t0, int((ts.max() - t0) // 3600) + 1)
    names, first = np.unique(users, return_index=True)
    bounds = [*first.tolist(), len(users)]
    flow = np.full((len(names), grid.n), np.nan)
    for i in range(len(names)):
        a, b = bounds[i], bounds[i + 1]
        t = ts[a:b]
        iv = np.diff(t, prepend=np.nan)
        flow[i] = bin_consumption(grid, t, diff[a:b] / 1000.0, iv)
    return [str(n) for n in names], grid, flow
