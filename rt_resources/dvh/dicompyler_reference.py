"""dicompyler-core as the reference contour DVH, with the one pydicom 3 fix in one place.

dicompyler-core 0.5.6 calls ``pydicom.dicomio.read_file``, removed in pydicom 3; it is
aliased to ``pydicom.dcmread`` here before dicompyler-core is imported. Its own
``statistic('Dx')`` returns 0 Gy when the cumulative DVH jumps past x % (flat or step
DVHs), so D_x is read from its curve instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _dvhcalc():
    import pydicom
    import pydicom.dicomio

    if not hasattr(pydicom.dicomio, "read_file"):
        pydicom.dicomio.read_file = pydicom.dcmread
    from dicompylercore import dvhcalc

    return dvhcalc


def dicompyler_metrics(rtstruct: Path, rtdose: Path, roi_number: int) -> dict[str, float]:
    """volume_cc, mean/min/max and D2/D50/D95/D98 from dicompyler-core's default DVH."""
    dvh = _dvhcalc().get_dvh(str(rtstruct), str(rtdose), roi_number)
    cum = dvh.cumulative
    volumes = np.asarray(cum.counts, dtype=float)  # cc receiving >= each bin's lower edge
    edges = np.asarray(cum.bins, dtype=float)
    out = {
        "volume_cc": float(dvh.volume),
        "mean_gy": float(dvh.mean),
        "min_gy": float(dvh.min),
        "max_gy": float(dvh.max),
    }
    for pct in (2, 50, 95, 98):
        target = dvh.volume * pct / 100.0
        above = np.nonzero(volumes >= target)[0]
        out[f"d{pct}_gy"] = float(edges[above[-1]]) if above.size and dvh.volume > 0 else math.nan
    return out
