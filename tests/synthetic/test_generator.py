"""Tests of the synthetic DICOM-RT generator (real files in tmp_path)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_rescale
from pydicom.uid import (
    CTImageStorage,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
)

from rt_resources.synthetic import (
    BOOST_RX_GY,
    HU_AIR,
    NOISE_HU,
    ORIENTATIONS,
    PRIMARY_RX_GY,
    SynthOptions,
    SynthPatient,
    add_cli_arguments,
    make_phantom,
    options_from_args,
    write_cohort,
    write_patient,
)
from tests.helpers import plane_points

SMALL = SynthOptions(rows=32, slices=12)
FULL = SynthOptions(rows=32, slices=12, boost=True, second_course=True, beam_doses=True)
SOP_CLASSES = {
    "CT": CTImageStorage,
    "RTSTRUCT": RTStructureSetStorage,
    "RTPLAN": RTPlanStorage,
    "RTDOSE": RTDoseStorage,
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthPatient:
    return write_patient(tmp_path_factory.mktemp("small"), 0, SMALL)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> SynthPatient:
    return write_patient(tmp_path_factory.mktemp("full"), 3, FULL)


def _files(course, modality: str) -> list[Path]:
    return [f.path for f in course.files if f.modality == modality]


def _ct_volume(course) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    slices = [pydicom.dcmread(p) for p in _files(course, "CT")]
    hu = np.stack([apply_rescale(ds.pixel_array, ds) for ds in slices])
    return hu, slices


def _dose(
    ds: pydicom.Dataset,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Dose in Gy (frames, rows, cols) and the patient coordinates of each grid point."""
    gy = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    iop = np.array(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    x, y, z = plane_points(ds)
    offsets = np.array(ds.GridFrameOffsetVector, float)[:, None, None]
    return gy, (
        x + offsets * normal[0],
        y + offsets * normal[1],
        z + offsets * normal[2],
    )


def test_every_file_is_valid_part10(full: SynthPatient) -> None:
    for course in full.courses:
        for f in course.files:
            ds = pydicom.dcmread(f.path)
            assert ds.SOPClassUID == SOP_CLASSES[f.modality]
            assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == f.sop_instance_uid
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.Modality == f.modality
            assert ds.Manufacturer == "rtpipeline-synth"
            assert ds.PatientID == "SYNTH003" and str(ds.PatientName) == "Synthetic^Patient003"
            assert ds.StudyInstanceUID == course.study_uid
            for keyword in (
                "PatientBirthDate",
                "PatientSex",
                "StudyDate",
                "StudyTime",
                "StudyID",
                "AccessionNumber",
            ):
                assert keyword in ds
            assert "ReferringPhysicianName" in ds and "SeriesInstanceUID" in ds and "SeriesNumber" in ds


def test_ct_hu_matches_phantom(small: SynthPatient) -> None:
    course = small.courses[0]
    hu, slices = _ct_volume(course)
    ds = slices[0]
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
        16,
        16,
        15,
        1,
    )
    assert (float(ds.RescaleIntercept), float(ds.RescaleSlope), ds.RescaleType) == (
        -1024.0,
        1.0,
        "HU",
    )
    assert ds.pixel_array.dtype == np.int16 and ds.PhotometricInterpretation == "MONOCHROME2"
    phantom = make_phantom(SMALL, 1)
    expected = np.stack([phantom.hu(*plane_points(s)) for s in slices])
    assert np.abs(hu - expected).max() <= NOISE_HU
    assert np.all(hu[expected == HU_AIR] == HU_AIR)
    # tissue classes at points inside each structure
    k = len(slices) // 2
    z = float(slices[k].ImagePositionPatient[2])

    def hu_at(x: float, y: float) -> float:
        px, py, _ = plane_points(slices[k])
        r, c = np.unravel_index(np.argmin((px - x) ** 2 + (py - y) ** 2), px.shape)
        return float(hu[k, r, c])

    assert abs(hu_at(*phantom.lung_l.centre[:2]) + 800) <= NOISE_HU
    assert abs(hu_at(*phantom.lung_r.centre[:2]) + 800) <= NOISE_HU
    assert hu_at(*phantom.spine.centre[:2]) > 300
    assert phantom.spine.centre[1] > 0  # spine posterior = +y
    assert abs(hu_at(phantom.body.semi_axes[0] * 0.9, 0.0) - 40) <= NOISE_HU
    assert hu_at(0.0, -phantom.body.semi_axes[1] - 10) == -1000
    assert abs(z) < SMALL.slices * SMALL.slice_mm / 2


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_simpleitk_reads_ct_series(tmp_path: Path, position: str) -> None:
    opts = SynthOptions(rows=32, slices=12, patient_position=position)
    course = write_patient(tmp_path, 0, opts).courses[0]
    ct_dir = str(course.files[0].path.parent)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(ct_dir, course.ct_series_uid))
    image = reader.Execute()
    first = pydicom.dcmread(course.files[0].path)
    assert first.InstanceNumber == 1 and first.PatientPosition == position
    assert list(first.ImageOrientationPatient) == [
        float(v) for v in ORIENTATIONS[position][0] + ORIENTATIONS[position][1]
    ]
    assert np.allclose(image.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
    assert np.allclose(image.GetSpacing(), (opts.pixel_mm, opts.pixel_mm, opts.slice_mm))
    assert image.GetSize() == (32, 32, 12)
    # the body is centred and patient-left (+x) holds Lung_L whatever the position
    phantom = make_phantom(opts, 1)
    lung_l = image.GetPixel(image.TransformPhysicalPointToIndex(phantom.lung_l.centre))
    spine = image.GetPixel(image.TransformPhysicalPointToIndex(phantom.spine.centre))
    assert phantom.lung_l.centre[0] > 0 and abs(lung_l + 800) <= NOISE_HU
    assert spine > 300
    zs = [image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(12)]
    assert np.isclose(max(zs) - min(zs), (opts.slices - 1) * opts.slice_mm)


def test_rtstruct_links_and_contours(small: SynthPatient) -> None:
    course = small.courses[0]
    rs = pydicom.dcmread(_files(course, "RTSTRUCT")[0])
    assert "FrameOfReferenceUID" not in rs
    ref_for = rs.ReferencedFrameOfReferenceSequence[0]
    assert ref_for.FrameOfReferenceUID == course.frame_of_reference_uid
    study = ref_for.RTReferencedStudySequence[0]
    assert study.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"
    assert study.ReferencedSOPInstanceUID == course.study_uid
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == course.ct_series_uid
    ct = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in _files(course, "CT")}
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(ct)
    assert all(i.ReferencedSOPClassUID == CTImageStorage for i in series.ContourImageSequence)

    names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    assert list(names.values()) == course.roi_names
    assert {"BODY", "PTV", "Lung_L", "Lung_R", "SpinalCord"} <= set(names.values())
    assert all(r.ReferencedFrameOfReferenceUID == course.frame_of_reference_uid for r in rs.StructureSetROISequence)
    types = {names[o.ReferencedROINumber]: o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
    assert types["BODY"] == "EXTERNAL" and types["PTV"] == "PTV" and types["Lung_L"] == "ORGAN"

    centroids = {}
    for roi in rs.ROIContourSequence:
        name = names[roi.ReferencedROINumber]
        points = []
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            data = np.array(contour.ContourData, float).reshape(-1, 3)
            assert len(data) == contour.NumberOfContourPoints
            ref_uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            assert np.all(data[:, 2] == float(ct[ref_uid].ImagePositionPatient[2]))
            points.append(data)
        if name == "BODY":
            assert len(roi.ContourSequence) == len(ct)
        centroids[name] = np.concatenate(points).mean(axis=0)
    assert centroids["Lung_L"][0] > 0 > centroids["Lung_R"][0]  # patient left = +x
    assert centroids["SpinalCord"][1] > 0  # posterior = +y


def test_plan_references_struct_and_dose_matches_analytic(small: SynthPatient) -> None:
    course = small.courses[0]
    plan = pydicom.dcmread(_files(course, "RTPLAN")[0])
    assert plan.RTPlanLabel == "PRIMARY" and plan.RTPlanGeometry == "PATIENT"
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPClassUID == RTStructureSetStorage
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == course.struct_uid
    assert plan.FrameOfReferenceUID == course.frame_of_reference_uid
    assert float(plan.DoseReferenceSequence[0].TargetPrescriptionDose) == PRIMARY_RX_GY
    assert course.prescription_gy == {plan.SOPInstanceUID: PRIMARY_RX_GY}
    fg = plan.FractionGroupSequence[0]
    assert fg.NumberOfFractionsPlanned == 30 and fg.NumberOfBeams == len(plan.BeamSequence) == 4
    assert np.isclose(sum(float(b.BeamDose) for b in fg.ReferencedBeamSequence), 2.0)
    for beam in plan.BeamSequence:
        cps = beam.ControlPointSequence
        assert len(cps) == 2 and float(cps[-1].CumulativeMetersetWeight) == 1.0
    assert plan.PatientSetupSequence[0].PatientPosition == "HFS"

    (dose_path,) = _files(course, "RTDOSE")
    ds = pydicom.dcmread(dose_path)
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == RTPlanStorage
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert ds.DoseSummationType == "PLAN" and ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL"
    assert ds.FrameOfReferenceUID == course.frame_of_reference_uid
    assert ds.SeriesInstanceUID != course.ct_series_uid and ds.StudyInstanceUID == course.study_uid
    assert float(ds.GridFrameOffsetVector[0]) == 0.0 and ds.NumberOfFrames == len(ds.GridFrameOffsetVector)
    assert float(ds.DoseGridScaling) < 1e-4 and 2**23 < ds.pixel_array.max() < 2**25
    assert float(ds.PixelSpacing[0]) == 2 * SMALL.pixel_mm
    gy, (x, y, z) = _dose(ds)
    expected = make_phantom(SMALL, 1).dose_gy(x, y, z, PRIMARY_RX_GY, "PTV")
    assert np.abs(gy - expected).max() < 1e-3
    assert np.isclose(gy.max(), PRIMARY_RX_GY, atol=1e-3) and gy.min() == 0.0


def test_beam_doses_boost_and_second_course(full: SynthPatient) -> None:
    assert [c.course_number for c in full.courses] == [1, 2]
    c1, c2 = full.courses
    assert c1.study_uid != c2.study_uid and c1.frame_of_reference_uid != c2.frame_of_reference_uid
    assert c1.ct_series_uid != c2.ct_series_uid and c1.patient_id == c2.patient_id
    assert c1.folder.name == "course_1" and c2.folder.name == "course_2"
    z1 = pydicom.dcmread(_files(c1, "CT")[0]).ImagePositionPatient[2]
    z2 = pydicom.dcmread(_files(c2, "CT")[0]).ImagePositionPatient[2]
    assert np.isclose(z2 - z1, 20.0)
    for course in full.courses:
        assert len(course.plan_uids) == 2 and len(course.dose_uids) == 5
        assert "PTV_boost" in course.roi_names
        assert sorted(course.prescription_gy.values()) == [BOOST_RX_GY, PRIMARY_RX_GY]
        primary_uid, boost_uid = course.plan_uids
        phantom = make_phantom(FULL, course.course_number, 3)  # the fixture writes patient index 3
        beams = [pydicom.dcmread(p) for p in _files(course, "RTDOSE") if "beam" in p.name]
        assert len(beams) == 4
        total = 0.0
        for n, ds in enumerate(beams, start=1):
            assert ds.DoseSummationType == "BEAM"
            ref = ds.ReferencedRTPlanSequence[0]
            assert ref.ReferencedSOPInstanceUID == primary_uid
            assert ref.ReferencedFractionGroupSequence[0].ReferencedBeamSequence[0].ReferencedBeamNumber == n
            gy, xyz = _dose(ds)
            total = total + gy
        assert np.abs(total - phantom.dose_gy(*xyz, PRIMARY_RX_GY, "PTV")).max() < 1e-3
        boost = pydicom.dcmread(course.folder / "RTDOSE_boost.dcm")
        assert boost.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == boost_uid
        assert pydicom.dcmread(course.folder / "RTPLAN_boost.dcm").RTPlanLabel == "BOOST"
        gy, xyz = _dose(boost)
        assert np.abs(gy - phantom.dose_gy(*xyz, BOOST_RX_GY, "PTV_boost")).max() < 1e-3
        assert course.dose_plan_uids[boost.SOPInstanceUID] == boost_uid


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_distinct(tmp_path: Path) -> None:
    opts = SynthOptions(rows=32, slices=12, boost=True)
    a = write_patient(tmp_path / "a", 1, opts)
    write_patient(tmp_path / "b", 1, opts)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    other_index = write_patient(tmp_path / "c", 2, opts)
    other_seed = write_patient(tmp_path / "d", 1, SynthOptions(rows=32, slices=12, boost=True, seed=7))
    uids = {f.sop_instance_uid for f in a.courses[0].files}
    for other in (other_index, other_seed):
        assert not uids & {f.sop_instance_uid for f in other.courses[0].files}
        assert other.courses[0].study_uid != a.courses[0].study_uid


def test_evil_patient_id_stays_inside_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    patient = write_patient(out, 0, SMALL, patient_id="../../../tmp/x", patient_name="../../etc")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written)
    assert all(out in f.path.parents for f in patient.courses[0].files)
    assert pydicom.dcmread(patient.courses[0].files[0].path).PatientID == "../../../tmp/x"


def test_cohort_and_cli_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path),
            "--patients",
            "2",
            "--rows",
            "16",
            "--slices",
            "6",
            "--boost",
            "--patient-position",
            "FFS",
        ]
    )
    opts = options_from_args(args)
    assert opts == SynthOptions(rows=16, slices=6, boost=True, patient_position="FFS")
    patients = write_cohort(Path(args.out), args.patients, opts)
    assert [p.folder.name for p in patients] == ["patient_000", "patient_001"]
    assert [p.patient_id for p in patients] == ["SYNTH000", "SYNTH001"]
    assert len({p.courses[0].study_uid for p in patients}) == 2


def test_patients_differ_but_patient_zero_is_the_reference(tmp_path):
    from rt_resources.synthetic import make_phantom

    reference = make_phantom(SMALL, 1, 0)
    assert make_phantom(SMALL, 1) == reference
    others = [make_phantom(SMALL, 1, i) for i in range(1, 4)]
    assert len({p.ptv.centre for p in others} | {reference.ptv.centre}) == 4
    assert len({p.body.semi_axes for p in others}) == 3
