"""The clinical-size preset (``REALISTIC``): its geometry, one written course, its dose grid and CLI flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rt_resources.synthetic import (
    REALISTIC,
    SynthOptions,
    SynthPatient,
    add_cli_arguments,
    course_context,
    dose_grid,
    options_from_args,
    write_patient,
)
from rt_resources.synthetic.options import DEFAULT_OPTIONS


def test_preset_is_a_clinical_planning_ct():
    assert (REALISTIC.rows, REALISTIC.slices) == (512, 160)
    assert (REALISTIC.pixel_mm, REALISTIC.slice_mm) == (0.977, 2.5)
    assert REALISTIC.rows * REALISTIC.pixel_mm == pytest.approx(500.0, abs=1.0)  # field of view, mm
    assert REALISTIC.slices * REALISTIC.slice_mm == pytest.approx(400.0)  # scan length, mm
    assert (REALISTIC.boost, REALISTIC.second_course, REALISTIC.mr) == (False, False, False)


@pytest.mark.parametrize(
    ("pixel_mm", "dose_pixel_mm"),
    [(5.0, 10.0), (10.0, 20.0), (1.25, 2.5), (1.0, 3.0), (0.977, 2.931)],
)
def test_dose_pixels_are_twice_the_ct_pixels_but_at_least_2_5_mm(pixel_mm, dose_pixel_mm):
    ctx = course_context(Path("unused"), 0, SynthOptions(rows=32, slices=12, pixel_mm=pixel_mm))
    assert dose_grid(ctx).spacing[:2] == pytest.approx((dose_pixel_mm, dose_pixel_mm))


def test_realistic_dose_grid_covers_the_body_at_planning_resolution():
    ctx = course_context(Path("unused"), 0, REALISTIC)
    grid = dose_grid(ctx)
    assert grid.spacing == pytest.approx((2.931, 2.931, 2.5))
    frames, rows, cols = grid.shape
    assert frames == REALISTIC.slices - 1
    body_x, body_y, _ = ctx.phantom.body.semi_axes
    assert (cols - 1) * grid.spacing[0] >= 2 * body_x
    assert (rows - 1) * grid.spacing[1] >= 2 * body_y
    assert cols * rows * frames < 3_000_000  # not a CT-resolution dose grid


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> SynthPatient:
    # about 5 s and 90 MB on one core (CT 160 x 512 x 512, RTSTRUCT, RTPLAN, RTDOSE)
    return write_patient(tmp_path_factory.mktemp("realistic"), 0, REALISTIC)


def _files(patient: SynthPatient, modality: str) -> list[Path]:
    return [f.path for f in patient.courses[0].files if f.modality == modality]


def test_written_ct_has_the_preset_geometry(realistic):
    paths = _files(realistic, "CT")
    assert len(paths) == 160
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert {(h.Rows, h.Columns) for h in headers} == {(512, 512)}
    assert {tuple(float(v) for v in h.PixelSpacing) for h in headers} == {(0.977, 0.977)}
    assert {float(h.SliceThickness) for h in headers} == {2.5}
    z = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    assert np.diff(z) == pytest.approx(np.full(159, 2.5))

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in paths])
    ct = reader.Execute()
    assert ct.GetSize() == (512, 512, 160)
    assert ct.GetSpacing() == pytest.approx((0.977, 0.977, 2.5))
    hu = sitk.GetArrayViewFromImage(ct)
    assert hu[80, 256, 256] > -500 and hu[80, 0, 0] == -1000  # body in the middle, air in the corner


def test_written_course_is_complete_with_a_coarse_dose(realistic):
    assert [len(_files(realistic, m)) for m in ("RTSTRUCT", "RTPLAN", "RTDOSE")] == [1, 1, 1]
    dose = pydicom.dcmread(_files(realistic, "RTDOSE")[0])
    assert [float(v) for v in dose.PixelSpacing] == pytest.approx([2.931, 2.931])
    assert np.diff([float(v) for v in dose.GridFrameOffsetVector]) == pytest.approx(np.full(158, 2.5))
    assert dose.pixel_array.shape == (int(dose.NumberOfFrames), dose.Rows, dose.Columns)
    assert dose.pixel_array.max() > 0


def _parse(*argv: str) -> SynthOptions:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return options_from_args(parser.parse_args(["--out", "x", *argv]))


def test_realistic_flag_selects_the_preset():
    assert _parse("--realistic") == REALISTIC
    assert _parse("--realistic", "--boost", "--patient-position", "FFS") == SynthOptions(
        **{**REALISTIC.__dict__, "boost": True, "patient_position": "FFS"}
    )


def test_size_flags_given_with_realistic_win():
    assert _parse("--realistic", "--slices", "40") == SynthOptions(**{**REALISTIC.__dict__, "slices": 40})
    assert _parse("--realistic", "--rows", "256", "--pixel-mm", "1.954") == SynthOptions(
        **{**REALISTIC.__dict__, "rows": 256, "pixel_mm": 1.954}
    )


def test_without_realistic_the_small_default_stays():
    assert _parse() == DEFAULT_OPTIONS
    assert _parse("--slice-mm", "2.5") == SynthOptions(slice_mm=2.5)
