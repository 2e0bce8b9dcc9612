"""Lineage ledger: a number back to its source files, code and checks; the append-only cohort ledger."""

import dataclasses

import pandas as pd
import pytest
from dagster import materialize

from rt_assets.assets.cohort.cohort_audit import cohort_audit
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.radiomics import radiomics
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.audit import AuditError, course_chain, format_chain, metric_chain
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh, radiomics]


@pytest.fixture
def course(drop, data_root, resources, instance):
    write_patient(drop, 0, dataclasses.replace(SMALL, boost=True))
    (key,) = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, [key])
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    return key


def test_a_dvh_number_back_to_its_files_and_code(course, data_root, instance):
    course_dir = data_root / "courses" / course
    found = metric_chain(instance, course_dir, "PTV", "d95_gy")
    table = pd.read_parquet(course_dir / "dvh_metrics.parquet").set_index("roi_name")
    assert found["values"] == [{"roi_name": "PTV", "source": "manual", "value": table.loc["PTV", "d95_gy"]}]
    assert found["table_matches_record"] is True
    assets = [link["asset"] for link in found["chain"]]
    assert assets == ["course_manifest", "ct_image", "dose_grid", "structure_masks", "dvh"]
    dvh_link = found["chain"][-1]
    assert set(dvh_link["inputs"]) >= {"dose_grid", "structure_masks"}
    # the dvh step consumed exactly the upstream materializations in the chain (not stale ones)
    by_asset = {link["asset"]: link for link in found["chain"]}
    for upstream in ("dose_grid", "structure_masks"):
        consumed = dvh_link["inputs"][upstream]
        assert consumed["storage_id"] == by_asset[upstream]["storage_id"] and consumed["is_latest"]
        assert consumed["data_version"] == by_asset[upstream]["data_version"]
    assert len(by_asset["dose_grid"]["data_version"]) == 32  # our content digest, not Dagster's default
    assert {c["check"] for c in dvh_link["checks"]} == {"dose_coverage", "dvh_sanity"}
    assert by_asset["dose_grid"]["source_uids"]["rtdose_uids"]
    kinds = {f["kind"] for f in found["source_files"]}
    assert {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"} <= kinds
    assert all(len(f["sha256"]) == 64 for f in found["source_files"])
    text = format_chain(found["chain"], found["source_files"], ["header"])
    assert "<- dvh" in text and "RTDOSE_primary.dcm" in text and "check dvh_sanity: PASS" in text

    # a radiomics feature goes through the radiomics asset; a changed table no longer matches its record
    feature = metric_chain(instance, course_dir, "PTV", "original_shape_MeshVolume")
    assert feature["chain"][-1]["asset"] == "radiomics" and feature["table_matches_record"] is True
    table.reset_index().assign(d95_gy=0.0).to_parquet(course_dir / "dvh_metrics.parquet")
    assert metric_chain(instance, course_dir, "PTV", "d95_gy")["table_matches_record"] is False
    with pytest.raises(AuditError, match="ROIs: "):
        metric_chain(instance, course_dir, "NoSuchROI", "d95_gy")
    with pytest.raises(AuditError, match="neither"):
        metric_chain(instance, course_dir, "PTV", "d96_gy")
    assert [link["asset"] for link in course_chain(instance, course)][:2] == ["course_manifest", "ct_image"]


def test_cohort_ledger_is_append_only(course, data_root, resources, instance):
    assert materialize([cohort_audit], instance=instance, resources=resources).success
    folder = data_root / "cohort" / "audit"
    (first,) = sorted(folder.glob("ledger-*.parquet"))
    before = first.read_bytes()
    ledger = pd.read_parquet(folder)
    mats = ledger[ledger["event"] == "materialization"]
    checks = ledger[ledger["event"] == "check"]
    assert set(mats["asset"]) == {a.key.to_user_string() for a in COURSE}
    assert (mats["course_key"] == course).all() and (checks["course_key"] == course).all()
    assert {"frame_of_reference", "dvh_sanity", "radiomics_nan"} <= set(checks["check"])
    for _, ids in ledger.groupby("event")["event_id"]:
        assert ids.is_unique
    assert '"input_sha256"' in mats.iloc[0]["lineage"]

    assert materialize([dvh], partition_key=course, instance=instance, resources=resources).success
    assert materialize([cohort_audit], instance=instance, resources=resources).success
    parts = sorted(folder.glob("ledger-*.parquet"))
    assert len(parts) == 2 and parts[0] == first and first.read_bytes() == before  # never rewritten
    new = pd.read_parquet(parts[1])
    for event, ids in new.groupby("event")["event_id"]:
        assert ids.min() > ledger.loc[ledger["event"] == event, "event_id"].max()
    assert set(new.loc[new["event"] == "materialization", "asset"]) == {"cohort_audit", "dvh"}
