"""TG-263 naming: real HNSCC spellings, the shipped tables, every rule, bad names, site files, digest."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from rt_resources.naming.tg263 import (
    AMBIGUOUS,
    EMPTY,
    EVALUATION,
    NOT_ASCII,
    OPTIMIZATION,
    SHIPPED_TABLE,
    SHIPPED_TOTALSEG,
    TARGET_UNCLEAR,
    TOO_LONG,
    TOTALSEG_NULL,
    UNMAPPED_COLUMNS,
    NameMap,
    NamingError,
    unmapped_table,
)
from tests.helpers import SHARED_DATA

HNSCC = SHARED_DATA / "hnscc"


@pytest.fixture(scope="module")
def names() -> NameMap:
    return NameMap.load()


def site(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def std(names: NameMap, roi_name: str, source: str = "manual") -> str | None:
    return names.standardize(roi_name, source).roi_std


# --------------------------------------------------------------------------- real data and tables


def test_hnscc_spellings_map_to_the_four_organs(names):
    if not HNSCC.is_dir():
        pytest.skip(f"{HNSCC} not present (shared test data is only in the project workspace)")
    rois = set()
    for path in sorted(HNSCC.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "StructureSetROISequence"])
        if ds.get("Modality") == "RTSTRUCT":
            rois |= {str(r.ROIName) for r in ds.StructureSetROISequence}
    expected = {
        "Rt Parotid": "Parotid_R",
        "Lt Parotid": "Parotid_L",
        "R parotid": "Parotid_R",
        "L parotid": "Parotid_L",
        "Cord": "SpinalCord",
        "cord": "SpinalCord",
        "Brainstem": "Brainstem",
        "Brain stem": "Brainstem",
    }
    assert rois == set(expected)
    assert {roi: std(names, roi) for roi in rois} == {roi: expected[roi] for roi in rois}


def test_shipped_table_is_consistent(names):
    assert len(names.structures) >= 120
    for s in names.structures.values():
        assert names.standardize(s.name).rule == "exact" and std(names, s.name) == s.name
        if s.reverse:
            assert std(names, s.reverse) == s.name, s.reverse
        for synonym in s.synonyms:
            found = names.standardize(synonym)
            assert (found.roi_std, found.rule) == (s.name, "synonym"), synonym
    for required in ("Brainstem", "SpinalCord", "SpinalCanal", "OpticChiasm", "Larynx", "Esophagus", "Lungs", "Heart"):
        assert required in names.standard_names
    for base in ("Parotid", "Glnd_Submand", "Cochlea", "OpticNrv", "Lens", "Eye", "Glnd_Lacrimal", "Lung", "Kidney"):
        assert {f"{base}_L", f"{base}_R"} <= names.standard_names


def test_totalsegmentator_classes_map_to_the_table_or_null(names):
    classes = yaml.safe_load(SHIPPED_TOTALSEG.read_text())["classes"]
    assert len(classes) == 117
    for cls, target in classes.items():
        found = names.standardize(cls, "totalseg")
        if target is None:
            assert (found.roi_std, found.reason) == (None, TOTALSEG_NULL), cls
        else:
            assert target in names.standard_names, cls
            assert (found.roi_std, found.rule) == (target, "totalsegmentator"), cls
    assert classes["lung_upper_lobe_left"] == "Lung_LUL" and classes["vertebrae_T1"] == "VB_T01"
    # another source never consults the TotalSegmentator map; an unknown class goes on to the rules
    assert std(names, "spleen", "manual") == "Spleen"
    assert names.standardize("gluteus_maximus_left", "manual").reason != TOTALSEG_NULL
    assert std(names, "parotid_gland_left", "totalseg") == "Parotid_L"


def test_totalsegmentator_yaml_lists_the_installed_task():
    binary = pytest.importorskip("totalsegmentator.map_to_binary")
    classes = yaml.safe_load(SHIPPED_TOTALSEG.read_text())["classes"]
    assert list(classes) == list(binary.class_map["total"].values())


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    "roi_name, expected, rule",
    [
        ("Lt Parotid", "Parotid_L", "laterality"),
        ("Parotid_Lt", "Parotid_L", "laterality"),
        ("parotid right", "Parotid_R", "laterality"),
        ("LtParotid", "Parotid_L", "laterality"),
        ("Parotid-Left", "Parotid_L", "laterality"),
        ("L_Parotid", "Parotid_L", "reverse order"),
        ("PAROTID_R", "Parotid_R", "exact"),
        ("Parotid (L)", "Parotid_L", "exact"),
        ("Submandibular Gland Rt", "Glnd_Submand_R", "laterality"),
        ("Lt Fem Head", "Femur_Head_L", "laterality"),
        ("Left Lung", "Lung_L", "laterality"),
        ("Optic Nerve R", "OpticNrv_R", "synonym"),
        ("Rt Optic Nerve", "OpticNrv_R", "laterality"),
    ],
)
def test_laterality(names, roi_name, expected, rule):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule) == (expected, rule)


@pytest.mark.parametrize("roi_name", ["Larynx", "Lens_L", "Lens_R", "Lips", "Rectum", "Liver", "Lungs", "Lung_LUL"])
def test_names_starting_with_l_or_r_are_not_split(names, roi_name):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule) == (roi_name, "exact")


@pytest.mark.parametrize(
    "roi_name, expected",
    [
        ("Cord PRV", "SpinalCord_PRV"),
        ("SpinalCord_PRV5", "SpinalCord_PRV05"),
        ("PRV_Brainstem_3mm", "Brainstem_PRV03"),
        ("Brainstem PRV 03", "Brainstem_PRV03"),
        ("CordPRV", "SpinalCord_PRV"),
        ("PRV 0.5cm Cord", "SpinalCord_PRV05"),
        ("OpticNrv_L_PRV3", "OpticNrv_L_PRV03"),
        ("Lt Parotid PRV 4mm", "Parotid_L_PRV04"),
    ],
)
def test_prv(names, roi_name, expected):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule) == (expected, "prv")


def test_prv_refusals(names):
    assert names.standardize("Brainstem_PRV2.5").reason == "PRV margin not understood"
    found = names.standardize("Parotid PRV")
    assert (found.roi_std, found.reason, found.candidates) == (None, AMBIGUOUS, ("Parotid_L_PRV", "Parotid_R_PRV"))


@pytest.mark.parametrize(
    "roi_name, expected",
    [
        ("PTV_70", "PTV_7000"),
        ("PTV70", "PTV_7000"),
        ("PTV 70Gy", "PTV_7000"),
        ("PTV_7000", "PTV_7000"),
        ("PTV 70.0 Gy", "PTV_7000"),
        ("ptv_54.25", "PTV_5425"),
        ("PTV 5040 cGy", "PTV_5040"),
        ("PTV_High", "PTV_High"),
        ("ptv low", "PTV_Low"),
        ("GTV", "GTV"),
        ("CTV", "CTV"),
        ("GTVp", "GTVp"),
        ("GTVn", "GTVn"),
        ("gtv_n1", "GTVn1"),
        ("PTV2", "PTV2"),
        ("PTV_2", "PTV2"),
        ("PTVp_7000", "PTVp_7000"),
        ("PTV1 60Gy", "PTV1_6000"),
        ("CTVsb", "CTVsb"),
        ("ITV", "ITV"),
    ],
)
def test_targets(names, roi_name, expected):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule) == (expected, "target")


@pytest.mark.parametrize("roi_name", ["PTV_boost", "PTV_180", "PTV 54.125", "PTV_Parotid"])
def test_targets_not_understood(names, roi_name):
    assert names.standardize(roi_name) == names.standardize(roi_name)  # cached, same answer
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule, found.reason) == (None, "", TARGET_UNCLEAR)


@pytest.mark.parametrize(
    "roi_name, expected, rule",
    [
        ("Parotid_L_opt", "zParotid_L_opt", "non-standard prefix"),
        ("opt Parotid L", "zParotid_L_opt", "non-standard prefix"),
        ("Parotid Lt opt", "zParotid_L_opt", "non-standard prefix"),
        ("zCord", "zSpinalCord", "non-standard prefix"),
        ("_Brainstem", "zBrainstem", "non-standard prefix"),
        ("PTV70_opt", "zPTV_7000_opt", "non-standard prefix"),
        ("PTVopt", "zPTV_opt", "non-standard prefix"),
        ("optPTV", "zPTV_opt", "non-standard prefix"),
        ("Cord_PRV5_opt", "zSpinalCord_PRV05_opt", "non-standard prefix"),
        ("PTV_eval", "PTV_eval", "evaluation"),
        ("eval_PTV_70", "PTV_7000_eval", "evaluation"),
    ],
)
def test_optimization_and_evaluation_structures(names, roi_name, expected, rule):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule) == (expected, rule)


@pytest.mark.parametrize(
    "roi_name, reason", [("opt_ring", OPTIMIZATION), ("zRing 2cm", OPTIMIZATION), ("eval_shell", EVALUATION)]
)
def test_optimization_structures_that_do_not_map(names, roi_name, reason):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule, found.reason) == (None, "", reason)


@pytest.mark.parametrize(
    "roi_name, expected",
    [("Body", "External"), ("BODY", "External"), ("External", "External"), ("Skin", "External"),
     ("Outer contour", "External"), ("Cord", "SpinalCord"), ("Brain stem", "Brainstem"), ("Thyroid", "Glnd_Thyroid"),
     ("Vertebra_C1", "VB_C1"), ("Small Bowel", "Bowel_Small"), ("Submandibular_L", "Glnd_Submand_L")],
)  # fmt: skip
def test_common_spellings(names, roi_name, expected):
    assert std(names, roi_name) == expected


@pytest.mark.parametrize(
    "roi_name, candidates",
    [
        ("Parotid", ("Parotid_L", "Parotid_R")),
        ("Lung", ("Lung_L", "Lung_R")),
        ("Kidney", ("Kidney_L", "Kidney_R")),
        ("Lung Upper Lobe", ("Lung_LUL", "Lung_RUL")),
    ],
)
def test_a_name_without_its_side_is_ambiguous(names, roi_name, candidates):
    found = names.standardize(roi_name)
    assert (found.roi_std, found.rule, found.candidates, found.reason) == (None, "", candidates, AMBIGUOUS)


@pytest.mark.parametrize(
    "roi_name, reason",
    [
        ("", EMPTY),
        ("   ", EMPTY),
        ("脊髄", NOT_ASCII),
        ("Cord µ", NOT_ASCII),
        ("P" * 65, TOO_LONG),
        ("Foo", "no match"),
    ],
)
def test_bad_names_are_unmapped_with_the_reason(names, roi_name, reason):
    found = names.standardize(roi_name)
    assert (found.roi_name, found.roi_std, found.rule, found.reason) == (roi_name, None, "", reason)


def test_names_are_folded_to_ascii_and_limited_to_64_characters(names):
    assert std(names, "Parótid_L") == "Parotid_L"  # NFKD drops the accent
    assert std(names, "ＢＯＤＹ") == "External"  # full-width letters
    assert std(names, "Parotid_L" + " " * 60) == "Parotid_L"  # trailing padding is not part of the name
    assert names.standardize("Cord" + "_" * 60).rule == "synonym"  # 64 characters
    assert names.standardize("Cord" + "_" * 61).reason == TOO_LONG
    assert names.standardize(None).reason == EMPTY  # never raises


# --------------------------------------------------------------------------- site file

SITE = """\
# site mapping: extends/overrides the shipped tables
synonyms:
  Parotid_L: ["LPar", "Parotid Lt opt"]
  SpinalCord: ["Myelon"]
  SpinalCanal: ["Cord"]
  PTV_7000: ["PTV high dose"]
totalsegmentator:
  hip_left: null
"""


def test_site_file_adds_and_overrides(tmp_path, names):
    site_names = NameMap.load(site(tmp_path, SITE))
    assert names.standardize("LPar").roi_std is None
    assert (site_names.standardize("LPar").roi_std, site_names.standardize("LPar").rule) == ("Parotid_L", "site")
    assert std(site_names, "Myelon") == "SpinalCord"
    assert std(site_names, "Parotid Lt opt") == "Parotid_L"  # the site's word over the opt convention
    assert std(names, "Cord") == "SpinalCord" and std(site_names, "Cord") == "SpinalCanal"
    assert std(site_names, "PTV high dose") == "PTV_7000"
    assert std(names, "hip_left", "totalseg") == "Bone_Pelvic_L"
    assert site_names.standardize("hip_left", "totalseg").reason == TOTALSEG_NULL
    assert std(site_names, "Rt Parotid") == "Parotid_R"  # the shipped rules still apply


def test_site_synonym_under_two_names_is_ambiguous(tmp_path):
    site_names = NameMap.load(site(tmp_path, "synonyms:\n  SpinalCord: [Myelon]\n  SpinalCanal: [myelon]\n"))
    found = site_names.standardize("MYELON")
    assert (found.roi_std, found.candidates, found.reason) == (None, ("SpinalCanal", "SpinalCord"), AMBIGUOUS)


def test_empty_site_file_changes_nothing(tmp_path, names):
    assert NameMap.load(site(tmp_path, "# nothing yet\n")).digest == names.digest


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "synonyms:\n  Parotid_L: [LPar]\nsynonym:\n  SpinalCord: [Myelon]\n",
            "line 3: unknown top-level key 'synonym'",
        ),
        ("synonyms:\n  Parotid_L: [LPar]\n  Parotid_Lt: [Foo]\n", "line 3: 'Parotid_Lt' is not a name of the TG-263"),
        ("synonyms:\n  Parotid_L: LPar\n", "line 2: the synonyms of Parotid_L must be a list of strings"),
        ("synonyms:\n  Parotid_L: [LPar, 12]\n", "line 2: an entry of the synonyms of Parotid_L must be a string"),
        ("synonyms:\n  Parotid_L: [ON]\n", "must be a string, got bool 'ON' (quote it"),
        ("synonyms:\n  Parotid_L: [LPar\n  SpinalCord: [x]\n", "line 3: YAML syntax error"),
        ("synonyms:\n  Parotid_L: [a]\n  Parotid_L: [b]\n", "line 3: 'Parotid_L' is listed twice"),
        ("synonyms:\n  Parotid_L: ['脊髄']\n", "line 2: '脊髄' is not ASCII"),
        ("totalsegmentator:\n  hip_left: Hip_L\n", "line 2: 'Hip_L' is not a name of the TG-263"),
        ("- a\n- b\n", "line 1: the site file must be a mapping"),
    ],
)
def test_site_file_errors_name_the_file_and_line(tmp_path, text, message):
    path = site(tmp_path, text)
    with pytest.raises(NamingError) as err:
        NameMap.load(path)
    assert str(err.value).startswith(f"{path}, line ")
    assert message in str(err.value)


def test_unknown_standard_name_suggests_close_names(tmp_path):
    with pytest.raises(NamingError, match=r"did you mean Parotid_L"):
        NameMap.load(site(tmp_path, "synonyms:\n  parotid_l: [LPar]\n"))


def test_shipped_table_errors_name_the_line(tmp_path, monkeypatch):
    from rt_resources.naming import tg263

    table = "structures:\n  - {name: SpinalCord, synonyms: [Cord]}\n  - {name: SpinalCanal, synonyms: [cord]}\n"
    monkeypatch.setattr(tg263, "SHIPPED_TABLE", site(tmp_path, table, "tg263.yaml"))
    with pytest.raises(NamingError, match=r"tg263.yaml, line 3: 'cord' of SpinalCanal already names SpinalCord"):
        NameMap.load()


def test_missing_site_file(tmp_path):
    with pytest.raises(NamingError, match="naming file not found"):
        NameMap.load(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- digest

_DIGEST = "from rt_resources.naming.tg263 import NameMap; import sys; print(NameMap.load(sys.argv[1]).digest)"


def test_digest_is_stable_and_follows_the_site_file(tmp_path, names):
    path = site(tmp_path, SITE)
    first = NameMap.load(path).digest
    assert NameMap.load().digest == names.digest and NameMap.load(path).digest == first != names.digest
    out = subprocess.run([sys.executable, "-c", _DIGEST, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == first  # same in another process (no hash randomization in it)
    path.write_text("# a comment does not change the mapping\n" + SITE)
    assert NameMap.load(path).digest == first
    path.write_text(SITE.replace('"Myelon"', '"Myelon", "Rueckenmark"'))
    assert NameMap.load(path).digest != first


# --------------------------------------------------------------------------- tables


def test_frame_adds_the_standard_name_and_rule_in_row_order(names):
    rows = pd.DataFrame(
        {"roi_name": ["Rt Parotid", "spleen", "Parotid", None], "source": ["manual", "totalseg", "manual", "manual"]},
        index=[7, 3, 5, 1],
    )
    out = names.frame(rows)
    assert list(out.index) == [7, 3, 5, 1] and list(out.columns) == ["roi_name", "source", "roi_std", "roi_std_rule"]
    assert out["roi_std"].tolist() == ["Parotid_R", "Spleen", None, None]
    assert out["roi_std_rule"].tolist() == ["laterality", "totalsegmentator", "", ""]
    assert "roi_std" not in rows.columns
    with pytest.raises(ValueError, match="no column source"):
        names.frame(rows[["roi_name"]])


def test_unmapped_table_counts_courses(tmp_path, names):
    rows = pd.DataFrame(
        {
            "course_key": ["a", "a", "a", "b", "b", "c", "c"],
            "roi_name": ["Parotid", "Parotid", "Cord", "Parotid", "zRing", "zRing", "gluteus_medius_left"],
            "source": ["manual", "manual", "manual", "manual", "manual", "manual", "totalseg"],
        }
    )
    out = unmapped_table(names.frame(rows), names)
    assert list(out.columns) == UNMAPPED_COLUMNS
    assert out.to_dict("records") == [
        {"roi_name": "Parotid", "source": "manual", "n_courses": 2, "n_rows": 3,
         "candidates": "Parotid_L; Parotid_R", "reason": AMBIGUOUS},
        {"roi_name": "zRing", "source": "manual", "n_courses": 2, "n_rows": 2, "candidates": "",
         "reason": OPTIMIZATION},
        {"roi_name": "gluteus_medius_left", "source": "totalseg", "n_courses": 1, "n_rows": 1, "candidates": "",
         "reason": TOTALSEG_NULL},
    ]  # fmt: skip
    assert unmapped_table(rows).equals(out)  # without roi_std: the shipped map decides
    site_names = NameMap.load(site(tmp_path, "synonyms:\n  Parotid_L: [Parotid]\n"))
    assert unmapped_table(site_names.frame(rows), site_names)["roi_name"].tolist() == ["zRing", "gluteus_medius_left"]
    empty = unmapped_table(rows.iloc[:0])
    assert list(empty.columns) == UNMAPPED_COLUMNS and empty.empty


def test_describe_markdown(tmp_path):
    md = NameMap.load(site(tmp_path, SITE)).describe_markdown(limit=5)
    assert "| TG-263 structures (shipped) |" in md and "117 (104 mapped, 13 null)" in md
    assert "| LPar | Parotid_L | site |" in md
    sample = md.split("| name | TG-263 name | table |")[1]
    assert len([line for line in sample.splitlines() if line.startswith("| ")]) == 5
    assert "more rows not shown" in md


def test_shipped_files_have_the_citation():
    assert "Int J Radiat Oncol Biol Phys" in SHIPPED_TABLE.read_text()
    assert "2018;100(4):1057-1066" in SHIPPED_TABLE.read_text()
