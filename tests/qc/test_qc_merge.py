"""qc.json without a lock (the course folder may be on NFS, written by workers on several machines):
steps that record their checks at the same time never lose one another's part."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from rt_assets.qc import record
from rt_resources.qc.results import QcResult

ASSETS = ["ct_image", "dose_grid", "structure_masks", "dvh", "radiomics", "totalseg_masks"]


def _writer(course_dir: str, asset: str, rounds: int) -> None:
    for i in range(rounds):
        result = QcResult(name=f"check_{i % 3}", asset=asset, passed=bool(i % 2), severity="WARN", description=asset)
        record(Path(course_dir), asset, [result])


def test_concurrent_writers_all_end_up_in_qc_json(tmp_path):
    course = tmp_path / "c-0123456789ab"
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):  # a few independent races
        procs = [ctx.Process(target=_writer, args=(str(course), asset, 15)) for asset in ASSETS]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        doc = json.loads((course / "qc.json").read_text())
        text = json.dumps(doc)
        assert all(f'"asset": "{asset}"' in text for asset in ASSETS), text[:2000]
    assert not (course / "qc" / ".lock").exists()  # no lock file: nothing that needs a local disk
