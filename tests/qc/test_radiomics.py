"""Radiomics NaN check: non-finite features per ROI, counted among each row's own features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rt_resources.qc.radiomics import radiomics_nan
from tests.qc.helpers import json_roundtrip, radiomics_frame


def test_radiomics_nan_passes_on_finite_features():
    r = radiomics_nan(radiomics_frame())
    assert r.passed and r.metadata["n_rows"] == 3 and r.metadata["n_features"] == 20
    json_roundtrip(r)


def test_radiomics_nan_warns_above_the_threshold():
    frame = radiomics_frame()
    frame.loc[1, ["original_f0", "original_f1"]] = np.nan  # 10 % of Heart's features
    frame.loc[2, "original_f3"] = np.inf  # 5 % of Lung_L's: at the threshold, listed only
    r = radiomics_nan(frame)
    assert not r.passed and r.severity == "WARN" and r.description == "Heart (manual): 10.0 % of features NaN/inf"
    listed = {row["roi_name"]: row for row in r.metadata["rois_with_nonfinite"]}
    assert listed["Heart"]["features"] == ["original_f0", "original_f1"] and listed["Lung_L"]["n_nonfinite"] == 1
    assert radiomics_nan(frame, max_fraction=0.2).passed


def test_radiomics_nan_counts_only_the_features_of_each_rows_parameter_file():
    """CT and MR rows in one table: the MR-only columns are empty on CT rows, not NaN features."""
    ct = radiomics_frame()
    mr = ct.assign(source="mr1/manual").rename(columns={f"original_f{i}": f"original_g{i}" for i in range(20)})
    mr.loc[0, "original_g0"] = np.nan  # one real NaN among the MR PTV's 20 features
    frame = pd.concat([ct, mr], ignore_index=True)
    assert not radiomics_nan(frame).passed  # without the feature sets: half of every row is empty
    own = {"manual": [f"original_f{i}" for i in range(20)], "mr1/manual": [f"original_g{i}" for i in range(20)]}
    r = radiomics_nan(frame, features_by_source=own)
    assert r.passed
    (listed,) = r.metadata["rois_with_nonfinite"]
    assert listed["source"] == "mr1/manual" and listed["n_nonfinite"] == 1 and listed["fraction"] == 0.05


def test_radiomics_nan_per_roi_feature_sets_within_one_source():
    """BODY extracted with the light parameters beside CT-parameter ROIs of the same source."""
    frame = radiomics_frame()
    frame["wavelet_f0"] = [np.nan, 1.0, 2.0]  # computed for Heart and Lung_L only, not for PTV
    full = [f"original_f{i}" for i in range(20)] + ["wavelet_f0"]
    own = {("manual", "PTV"): full[:20], ("manual", "Heart"): full, ("manual", "Lung_L"): full}
    assert radiomics_nan(frame, features_by_source=own).passed
    frame.loc[1, "wavelet_f0"] = np.nan  # a real NaN in Heart's own features
    r = radiomics_nan(frame, features_by_source=own, max_fraction=0.01)
    assert not r.passed and r.description.startswith("Heart (manual)")


def test_radiomics_nan_basic_rows_are_counted_among_their_own_features():
    """Auto-segmented organs with the basic set (first-order and shape) beside full-set rows: the
    full set's other columns are empty on the basic rows; a real NaN among a basic row's own
    features still counts, and a feature is "non-finite everywhere" only where it was computed."""
    frame = radiomics_frame()
    frame["roi_name"] = ["GTV", "heart", "rib_left_1"]
    frame["source"] = ["manual", "totalseg", "totalseg"]
    frame["wavelet-LLH_glcm_f0"] = [1.0, np.nan, np.nan]  # the heart's one NaN; the rib does not compute it
    full = [f"original_f{i}" for i in range(20)] + ["wavelet-LLH_glcm_f0"]
    basic = full[:10]
    frame.loc[2, full[10:20]] = np.nan  # the rib's columns outside the basic set
    own = {("manual", "GTV"): full, ("totalseg", "heart"): full, ("totalseg", "rib_left_1"): basic}
    sets = {("manual", "GTV"): "full", ("totalseg", "heart"): "full", ("totalseg", "rib_left_1"): "basic"}
    r = radiomics_nan(frame, features_by_source=own, param_sets=sets)
    assert r.passed and r.description.startswith("3 ROIs (1 basic, 2 full) x 21 features finite")
    (listed,) = r.metadata["rois_with_nonfinite"]  # the heart's NaN (1 of 21, under 5 %), not the rib
    assert listed["roi_name"] == "heart" and listed["param_set"] == "full" and listed["n_nonfinite"] == 1
    assert r.metadata["rows_by_param_set"] == {"basic": 1, "full": 2}
    assert r.metadata["features_nonfinite_everywhere"] == []
    frame.loc[2, "original_f0"] = np.nan  # one NaN among the rib's 10 features: 10 %
    r = radiomics_nan(frame, features_by_source=own, param_sets=sets)
    assert not r.passed and r.description == "rib_left_1 (totalseg): 10.0 % of features NaN/inf"
    frame.loc[0, "wavelet-LLH_glcm_f0"] = np.nan  # now NaN in every row that computes it
    r = radiomics_nan(frame, features_by_source=own, param_sets=sets, max_fraction=0.2)
    assert r.metadata["features_nonfinite_everywhere"] == ["wavelet-LLH_glcm_f0"]
