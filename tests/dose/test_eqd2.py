"""EQD2 and BED per treatment phase (LQ model) and the alpha/beta table, on synthetic images."""

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.dose.eqd2 import (
    SHIPPED_TABLE,
    AlphaBetaTable,
    EQD2Error,
    Phase,
    bed,
    eqd2,
    eqd2_array,
    withheld_reason,
)

SIZE = (6, 5, 4)  # x, y, z


def dose_image(values_gy, spacing=(2.0, 2.0, 3.0), origin=(-5.0, -4.0, 10.0)) -> sitk.Image:
    """A dose image in Gy: a number fills the grid, an array (z, y, x) is used as is."""
    array = np.broadcast_to(np.asarray(values_gy, dtype=np.float64), SIZE[::-1]).copy()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def primary_and_boost(primary_gy=50.0, boost_gy=20.0) -> list[Phase]:
    return [
        Phase("1.2.3.1", dose_image(primary_gy), 25),  # 25 x 2 Gy
        Phase("1.2.3.2", dose_image(boost_gy), 8),  # 8 x 2.5 Gy
    ]


# --------------------------------------------------------------------------------------------
# the engine


@pytest.mark.parametrize(
    ("alpha_beta_gy", "eqd2_gy", "bed_gy"),
    [
        # EQD2 = 50 (2 + 3)/(2 + 3) + 20 (2.5 + 3)/(2 + 3); BED = 50 (1 + 2/3) + 20 (1 + 2.5/3)
        (3.0, 50.0 + 22.0, 50.0 * 5 / 3 + 20.0 * 5.5 / 3),
        # EQD2 = 50 + 20 x 12.5/12; BED = 50 x 1.2 + 20 x 1.25
        (10.0, 50.0 + 20.0 * 12.5 / 12.0, 60.0 + 25.0),
    ],
)
def test_primary_and_boost_match_hand_computation(alpha_beta_gy, eqd2_gy, bed_gy):
    phases = primary_and_boost()
    eqd2_image = eqd2(phases, alpha_beta_gy)
    bed_image = bed(phases, alpha_beta_gy)
    for image, expected in [(eqd2_image, eqd2_gy), (bed_image, bed_gy)]:
        array = sitk.GetArrayFromImage(image)
        # the metrics of a uniform phantom: mean, max, min, D95 are all the one value
        for metric in (array.mean(), array.max(), array.min(), np.percentile(array, 5)):
            assert metric == pytest.approx(expected, rel=1e-3)
        assert array == pytest.approx(expected, rel=1e-12)  # and exactly, in fact
    assert eqd2_gy == pytest.approx(72.0 if alpha_beta_gy == 3.0 else 70.8333, rel=1e-5)


def test_output_keeps_the_grid_and_is_float64():
    phases = primary_and_boost()
    for image in (eqd2(phases, 3.0), bed(phases, 3.0)):
        assert image.GetSize() == SIZE
        assert image.GetSpacing() == phases[0].dose.GetSpacing()
        assert image.GetOrigin() == phases[0].dose.GetOrigin()
        assert image.GetPixelID() == sitk.sitkFloat64
    array = eqd2_array(phases, 3.0)
    assert array.dtype == np.float64 and array.shape == SIZE[::-1]


def test_gradient_matches_numpy_voxel_by_voxel():
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in SIZE[::-1]], indexing="ij")
    primary = 10.0 + 9.0 * x + 2.0 * y + 0.5 * z  # 10 .. 66.5 Gy over 25 fractions
    boost = 30.0 - 4.0 * x + 1.0 * z  # 10 .. 33 Gy over 8 fractions
    phases = [Phase("p", dose_image(primary), 25), Phase("b", dose_image(boost), 8)]
    for ab in (1.5, 3.0, 10.0):
        expected_eqd2 = primary * (primary / 25 + ab) / (2 + ab) + boost * (boost / 8 + ab) / (2 + ab)
        expected_bed = primary * (1 + primary / 25 / ab) + boost * (1 + boost / 8 / ab)
        np.testing.assert_allclose(eqd2_array(phases, ab), expected_eqd2, rtol=1e-12)
        np.testing.assert_allclose(sitk.GetArrayFromImage(bed(phases, ab)), expected_bed, rtol=1e-12)


def test_converting_the_summed_physical_dose_differs():
    """The error this module avoids: EQD2 of 70 Gy in 33 fractions is not the phases' sum."""
    ab = 3.0
    per_phase = float(eqd2_array(primary_and_boost(), ab).mean())
    summed = Phase("sum", dose_image(70.0), 33)
    wrong = float(eqd2_array([summed], ab).mean())
    assert per_phase == pytest.approx(72.0)
    assert wrong == pytest.approx(70.0 * (70.0 / 33 + ab) / (2 + ab))  # 71.70 Gy
    assert abs(per_phase - wrong) > 0.25
    # and the physical sum of the same phases with the primary's fraction count is further off still
    assert abs(per_phase - float(eqd2_array([Phase("sum", dose_image(70.0), 25)], ab).mean())) > 1.0


def test_phases_on_different_grids_are_refused_naming_the_plan():
    phases = [
        Phase("1.2.3.1", dose_image(50.0), 25),
        Phase("1.2.3.2", dose_image(20.0, spacing=(2.5, 2.0, 3.0)), 8),
    ]
    with pytest.raises(EQD2Error, match=r"plan 1\.2\.3\.2.*grid.*resample"):
        eqd2(phases, 3.0)
    shifted = [phases[0], Phase("1.2.3.3", dose_image(20.0, origin=(0.0, 0.0, 0.0)), 8)]
    with pytest.raises(EQD2Error, match=r"plan 1\.2\.3\.3"):
        bed(shifted, 3.0)


def test_a_phase_without_fractions_is_withheld_naming_the_plan():
    phases = [Phase("1.2.3.1", dose_image(50.0), 25), Phase("1.2.3.9", dose_image(20.0), None)]
    assert withheld_reason(phases) == "plan 1.2.3.9 states no NumberOfFractionsPlanned"
    with pytest.raises(EQD2Error, match=r"withheld: plan 1\.2\.3\.9 states no NumberOfFractionsPlanned"):
        eqd2(phases, 3.0)
    assert withheld_reason(primary_and_boost()) == ""
    assert withheld_reason([]) == "no treatment phase"
    assert "plan 1.2.3.1" in withheld_reason([Phase("1.2.3.1", dose_image(50.0), 0)])
    assert "at least 1 fraction" in withheld_reason([Phase("1.2.3.1", dose_image(50.0), -3)])


@pytest.mark.parametrize("alpha_beta_gy", [0, 0.0, -3.0, float("nan"), float("inf"), "3", None, True])
def test_alpha_beta_argument_must_be_a_positive_number(alpha_beta_gy):
    for compute in (eqd2, bed, eqd2_array):
        with pytest.raises(EQD2Error, match="alpha/beta"):
            compute(primary_and_boost(), alpha_beta_gy)


def test_negative_or_nan_dose_is_refused_naming_the_plan():
    with pytest.raises(EQD2Error, match=r"plan x: .*negative"):
        eqd2([Phase("x", dose_image(-1.0), 5)], 3.0)
    with pytest.raises(EQD2Error, match=r"plan y: .*non-finite"):
        eqd2([Phase("y", dose_image(np.nan), 5)], 3.0)


# --------------------------------------------------------------------------------------------
# the alpha/beta table


def test_shipped_table_lookup():
    table = AlphaBetaTable.load()
    assert table.lookup("SpinalCord").value_gy == 2.0
    assert table.lookup("SpinalCord").source == "alpha_beta.yaml: SpinalCord"
    assert table.lookup("Parotid_L").value_gy == 3.0
    assert table.lookup("parotid_r").value_gy == 3.0  # case ignored
    assert table.lookup("Brainstem").value_gy == 2.0
    assert table.lookup("Prostate").value_gy == 1.5
    ptv = table.lookup("PTV_7000")
    assert (ptv.value_gy, ptv.source) == (10.0, "default: tumour")
    assert table.lookup("ctv_high").value_gy == 10.0
    late = table.lookup(None)
    assert (late.value_gy, late.source) == (3.0, "default: normal tissue (late)")
    assert table.lookup("NotAnOrgan").source == "default: normal tissue (late)"
    # no TG-263 name: a target by its ROI name still gets the tumour value, anything else the late one
    assert table.lookup(None, "PTV 70").value_gy == 10.0
    assert table.lookup(None, "cord").value_gy == 3.0


def test_shipped_table_cites_every_entry():
    table = AlphaBetaTable.load()
    assert {"tumour", "normal_tissue_late"} <= set(table.defaults)
    for name, entry in {**table.defaults, **table.entries}.items():
        assert entry.value_gy > 0 and entry.citation, name
    assert "Fowler" in SHIPPED_TABLE.read_text()


def test_site_file_overrides_and_extends(tmp_path):
    shipped = AlphaBetaTable.load()
    site = tmp_path / "site_ab.yaml"
    site.write_text(
        "defaults:\n"
        "  normal_tissue_late: 2.5\n"
        "organs:\n"
        "  SpinalCord: {value: 1.5, citation: local protocol}\n"
        "  Cochlea_L: 3.5\n"
        "targets:\n"
        "  PTV_7800: {value: 1.5, citation: 'prostate cancer, Brenner & Hall 1999'}\n"
    )
    table = AlphaBetaTable.load(site)
    cord = table.lookup("SpinalCord")
    assert (cord.value_gy, cord.source) == (1.5, "site file site_ab.yaml: SpinalCord")
    assert table.lookup("Cochlea_L").value_gy == 3.5
    assert table.lookup("PTV_7800").value_gy == 1.5
    assert table.lookup("PTV_5600").value_gy == 10.0  # other targets keep the tumour default
    assert table.lookup("Parotid_L") == shipped.lookup("Parotid_L")  # the rest of the shipped table stays
    late = table.lookup(None)
    assert late.value_gy == 2.5 and "site_ab.yaml" in late.source
    assert table.digest != shipped.digest
    assert AlphaBetaTable.load().digest == shipped.digest


def test_digest_ignores_comments_and_citations(tmp_path):
    def digest(folder: str, body: str) -> str:
        (tmp_path / folder).mkdir()
        site = tmp_path / folder / "ab.yaml"  # one file name: the sources are the same
        site.write_text(body)
        return AlphaBetaTable.load(site).digest

    one = digest("a", "organs:\n  SpinalCord: {value: 1.5, citation: one}\n")
    assert digest("b", "# a comment\norgans:\n  SpinalCord: {value: 1.5, citation: another}\n") == one
    assert digest("c", "organs:\n  SpinalCord: 1.8\n") != one


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("organs:\n  Heart: 2.5\n  SpinalCord:\n    value: 0\n", r"organs\.SpinalCord \(line 3\)"),
        ("organs:\n  SpinalCord: -2\n", r"organs\.SpinalCord \(line 2\)"),
        ("organs:\n  SpinalCord: two\n", r"organs\.SpinalCord \(line 2\)"),
        ("organs:\n  SpinalCord: {value: 2 Gy}\n", r"organs\.SpinalCord \(line 2\)"),
        ("organs:\n  SpinalCord: .nan\n", r"organs\.SpinalCord \(line 2\)"),
        ("organs:\n  SpinalCord: true\n", r"organs\.SpinalCord \(line 2\)"),
        ("defaults:\n  tumour: 0.0\n", r"defaults\.tumour \(line 2\)"),
        ("targets:\n  PTV_7800: {value: -1.5}\n", r"targets\.PTV_7800 \(line 2\)"),
    ],
)
def test_site_file_refuses_non_positive_or_non_numeric(tmp_path, body, where):
    site = tmp_path / "bad.yaml"
    site.write_text(body)
    with pytest.raises(EQD2Error, match=rf"bad\.yaml: {where}: alpha/beta must be a"):
        AlphaBetaTable.load(site)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("organ:\n  SpinalCord: 2\n", r"organ \(line 1\): unknown section"),
        ("defaults:\n  tumor: 10\n", r"defaults\.tumor \(line 2\): unknown default"),
        ("organs:\n  SpinalCord: {valu: 2}\n", r"unknown key 'valu'"),
        ("organs:\n  SpinalCord: {citation: x}\n", r"organs\.SpinalCord \(line 2\): no value"),
        ("organs:\n  SpinalCord: 2\n  SpinalCord: 3\n", r"organs\.SpinalCord \(line 3\) repeats .*\(line 2\)"),
        ("organs:\n  PTV_70: 2\ntargets:\n  ptv_70: 3\n", r"targets\.ptv_70 \(line 4\) repeats organs\.PTV_70"),
        ("organs: [SpinalCord]\n", r"organs \(line 1\): must be a mapping"),
        ("organs: {SpinalCord: 2\n", r"cannot read"),
    ],
)
def test_site_file_refuses_malformed_tables(tmp_path, body, message):
    site = tmp_path / "bad.yaml"
    site.write_text(body)
    with pytest.raises(EQD2Error, match=message) as info:
        AlphaBetaTable.load(site)
    assert "bad.yaml" in str(info.value)
