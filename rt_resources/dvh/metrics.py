"""DVH metrics from weighted dose samples.

Every DVH, contour- or mask-based, is reduced to dose samples (Gy) with volume weights
(mm^3) and accumulated here, so all sources share one metric code.

Conventions:

* cumulative DVH: V(D) = volume receiving a dose >= D;
* D_x% (D2, D50, D95, D98) = the highest dose D with V(D) >= x % of the ROI volume, i.e.
  the minimum dose of the hottest x %; D_xcc (D1cc, D0.1cc) likewise with x cc. Read from
  a histogram of BIN_GY bins with linear interpolation inside the bin, so the error is
  below BIN_GY; NaN when the ROI is smaller than x cc;
* mean, min and max are exact over the samples;
* V_N Gy in % for every whole Gy from 1 to floor(max dose);
* with a prescription: V95%Rx and V100%Rx in %;
* curves: the cumulative DVH at CURVE_STEP_GY steps from 0 to the maximum dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BIN_GY = 0.001
CURVE_STEP_GY = 0.1


@dataclass
class DoseAccumulator:
    """Streams weighted dose samples into a fine histogram plus exact moments."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    volume_mm3: float = 0.0
    dose_volume: float = 0.0
    min_gy: float = math.inf
    max_gy: float = -math.inf

    def add(self, dose_gy: np.ndarray, weight_mm3: np.ndarray | float) -> None:
        dose_gy = np.asarray(dose_gy, dtype=np.float64).ravel()
        if dose_gy.size == 0:
            return
        weights = np.broadcast_to(np.asarray(weight_mm3, dtype=np.float64), dose_gy.shape).ravel()
        dose_gy = np.maximum(dose_gy, 0.0)
        bins = np.floor(dose_gy / BIN_GY).astype(np.int64)
        hist = np.bincount(bins, weights=weights)
        if hist.size > self.counts.size:
            hist[: self.counts.size] += self.counts
            self.counts = hist
        else:
            self.counts[: hist.size] += hist
        self.volume_mm3 += float(weights.sum())
        self.dose_volume += float(weights @ dose_gy)
        self.min_gy = min(self.min_gy, float(dose_gy.min()))
        self.max_gy = max(self.max_gy, float(dose_gy.max()))


@dataclass
class DVH:
    volume_cc: float
    mean_gy: float
    min_gy: float
    max_gy: float
    cumulative_mm3: np.ndarray  #: V(>= i * BIN_GY) for each bin edge i
    n_samples_note: str = ""

    def volume_at_dose_mm3(self, dose_gy: float) -> float:
        """V(D): volume receiving >= ``dose_gy`` (linear within a bin)."""
        if dose_gy <= 0:
            return self.volume_cc * 1000.0
        pos = dose_gy / BIN_GY
        i = int(math.floor(pos))
        if i >= self.cumulative_mm3.size - 1:
            return 0.0
        frac = pos - i
        return float(self.cumulative_mm3[i] * (1 - frac) + self.cumulative_mm3[i + 1] * frac)

    def dose_at_volume_mm3(self, volume_mm3: float) -> float:
        """The highest D with V(D) >= ``volume_mm3`` (NaN if the ROI is smaller)."""
        cum = self.cumulative_mm3
        if volume_mm3 > cum[0] * (1 + 1e-9) or cum[0] <= 0:
            return math.nan
        # cum is non-increasing; last edge index with cum >= volume
        i = int(np.searchsorted(-cum, -volume_mm3, side="right")) - 1
        i = max(0, min(i, cum.size - 1))
        if i + 1 >= cum.size:
            dose = i * BIN_GY
        else:
            in_bin = cum[i] - cum[i + 1]
            frac = (cum[i] - volume_mm3) / in_bin if in_bin > 0 else 0.0
            dose = (i + min(max(frac, 0.0), 1.0)) * BIN_GY
        return float(min(max(dose, self.min_gy), self.max_gy))  # no dose outside the sampled range

    def d_pct(self, pct: float) -> float:
        return self.dose_at_volume_mm3(self.volume_cc * 1000.0 * pct / 100.0)

    def v_pct(self, dose_gy: float) -> float:
        total = self.volume_cc * 1000.0
        return 100.0 * self.volume_at_dose_mm3(dose_gy) / total if total > 0 else math.nan


def finish(acc: DoseAccumulator) -> DVH:
    """The DVH of everything added to ``acc``."""
    if acc.volume_mm3 <= 0:
        raise ValueError("no volume: the ROI has no samples inside")
    counts = np.append(acc.counts, 0.0)
    cumulative = np.cumsum(counts[::-1])[::-1]
    # guard tiny negative drift from float sums
    cumulative = np.maximum(cumulative, 0.0)
    return DVH(
        volume_cc=acc.volume_mm3 / 1000.0,
        mean_gy=acc.dose_volume / acc.volume_mm3,
        min_gy=acc.min_gy,
        max_gy=acc.max_gy,
        cumulative_mm3=cumulative,
    )


def metrics_row(dvh: DVH, prescription_gy: float | None) -> dict[str, float]:
    """The metric columns of dvh_metrics.parquet for one ROI."""
    row = {
        "volume_cc": dvh.volume_cc,
        "mean_gy": dvh.mean_gy,
        "min_gy": dvh.min_gy,
        "max_gy": dvh.max_gy,
        "d2_gy": dvh.d_pct(2),
        "d50_gy": dvh.d_pct(50),
        "d95_gy": dvh.d_pct(95),
        "d98_gy": dvh.d_pct(98),
        "d1cc_gy": dvh.dose_at_volume_mm3(1000.0),
        "d0_1cc_gy": dvh.dose_at_volume_mm3(100.0),
    }
    for n in range(1, int(math.floor(dvh.max_gy)) + 1):
        row[f"v{n}gy_pct"] = dvh.v_pct(float(n))
    if prescription_gy:
        row["rx_gy"] = prescription_gy
        row["v95pct_rx_pct"] = dvh.v_pct(0.95 * prescription_gy)
        row["v100pct_rx_pct"] = dvh.v_pct(prescription_gy)
    return row


def curve(dvh: DVH) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative DVH sampled every CURVE_STEP_GY: (dose_gy, volume_cc)."""
    doses = np.arange(0.0, dvh.max_gy + CURVE_STEP_GY, CURVE_STEP_GY)
    volumes = np.array([dvh.volume_at_dose_mm3(d) for d in doses]) / 1000.0
    return doses, volumes
