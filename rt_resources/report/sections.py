"""The sections of the cohort report: one function per section, from :class:`CohortTables` to a
:class:`Section` (its HTML, and whether it shows a finding or says why it cannot).

A section is *filled* when it shows something from the cohort's data, a zero included where the
table is there and says so ("every file of the drop is used"); it is *empty* when its input is
absent, unreadable or lacks the columns it needs, or holds too little to show (no structure in two
courses, no ICC), and then it says which of these it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rt_resources.report import figures
from rt_resources.report.bands import MIN_COURSES, SOURCE_RULE, dvh_bands
from rt_resources.report.html_parts import Section, count, empty_note, figure, more_rows, para, table
from rt_resources.report.inputs import COHORT_FILES, CohortTables

MAX_BAND_STRUCTURES = 24
MAX_COURSE_ROWS = 500
MAX_FILE_ROWS = 200
MAX_UNMAPPED_ROWS = 200
MAX_FAILED_CHECKS = 20
MAX_AGREEMENT_STRUCTURES = 40
#: ICC thresholds of the robustness shares: Koo and Li 2016 ("good" from 0.75, "excellent" from
#: 0.90; 0.90 is also Zwanenburg et al.'s robust feature, rt_resources.radiomics.robustness)
ICC_GOOD, ICC_EXCELLENT = 0.75, 0.90
#: pyradiomics' feature classes, in the order the report lists them (others follow, alphabetically)
FEATURE_CLASSES = ("shape", "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
NO_AGREEMENT = "no agreement table (no organ with both a manual and an automatic contour)"


def _problem(tables: CohortTables, key: str, frame: pd.DataFrame | None, required: Sequence[str]) -> str | None:
    """Why the cohort table ``key`` cannot be used: unreadable, or lacking ``required`` columns
    (None: usable, or absent; absence is each section's own sentence)."""
    name = f"cohort/{COHORT_FILES[key]}"
    if tables.problem(key):
        return f"{name} could not be read ({tables.problem(key)})"
    if frame is not None:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            return f"{name} lacks the column(s) {', '.join(missing)} (an output of another rtpipeline version?)"
    return None


def _empty(section_id: str, title: str, why: str, extra: str = "") -> Section:
    return Section(section_id, title, empty_note(why) + extra, filled=False, why_empty=why)


def _unusable(
    tables: CohortTables, section_id: str, title: str, key: str, required: Sequence[str], absent: str
) -> Section | None:
    """The empty section when the cohort table ``key`` is unreadable, lacks ``required`` columns or
    is absent (then ``absent`` says why); None when it can be used."""
    frame = getattr(tables, key)
    problem = _problem(tables, key, frame, required)
    if problem or frame is None:
        return _empty(section_id, title, problem or absent)
    return None


# -- Courses and quality checks ---------------------------------------------------------------


def _course_status(group: pd.DataFrame) -> tuple[int, int, int, str, str]:
    """(n checks, n failed ERROR, n failed WARN, status, failing checks) of one course's QC rows."""
    failed = group[~group["passed"].astype(bool)]
    is_error = failed["severity"].astype(str).str.upper() == "ERROR"
    errors = sorted(set(failed.loc[is_error, "check"].astype(str)))
    warns = sorted(set(failed.loc[~is_error, "check"].astype(str)) - set(errors))
    status = "error" if errors else "warn" if warns else "ok"
    names = ", ".join([*errors, *(f"{w} (warn)" for w in warns)])
    return len(group), int(is_error.sum()), int((~is_error).sum()), status, names


def qc_section(tables: CohortTables) -> Section:
    """One row per course: checks run, failed ERROR and WARN checks, status and the failing
    checks; a bar chart of the checks that failed most often."""
    sid, title = "qc", "Courses and quality checks"
    absent = "no quality-check table (cohort/qc.parquet is absent): no course has been checked"
    if unusable := _unusable(tables, sid, title, "qc", ("course_key", "check", "passed", "severity"), absent):
        return unusable
    qc = tables.qc
    if qc.empty:
        return _empty(sid, title, "cohort/qc.parquet has no rows: no course has been checked yet")
    per_course = {str(k): _course_status(g) for k, g in qc.groupby("course_key", sort=True)}
    unchecked = [k for k in tables.course_keys if k not in per_course]
    rank = {"error": 0, "warn": 1, "no QC": 2, "ok": 3}
    rows = [(k, *v) for k, v in per_course.items()] + [(k, 0, 0, 0, "no QC", "") for k in unchecked]
    rows.sort(key=lambda r: (rank[r[4]], r[0]))
    n_by_status = {s: sum(r[4] == s for r in rows) for s in rank}
    summary = (
        f"{count(len(rows), 'course')}: {n_by_status['ok']} ok, {n_by_status['warn']} warn, "
        f"{n_by_status['error']} error"
        + (f", {n_by_status['no QC']} without QC results" if n_by_status["no QC"] else "")
        + ". A course is 'error' when one of its ERROR checks failed, 'warn' when only WARN checks failed "
        "(a check that could not run counts as failed)."
    )
    shown = rows[:MAX_COURSE_ROWS]
    body = para(summary) + table(
        ["course", "checks", "failed ERROR", "failed WARN", "status", "failing checks"],
        shown,
        numeric=(1, 2, 3),
        row_classes=[r[4].replace(" ", "-").lower() for r in shown],
    )
    body += more_rows(len(shown), len(rows), "courses")
    failed = qc[~qc["passed"].astype(bool)].assign(
        is_error=lambda t: t["severity"].astype(str).str.upper() == "ERROR", check=lambda t: t["check"].astype(str)
    )
    if failed.empty:
        body += para("No check failed in any course.")
    else:
        per_check = pd.DataFrame(
            {
                "errors": failed[failed["is_error"]].groupby("check")["course_key"].nunique(),
                "warns": failed[~failed["is_error"]].groupby("check")["course_key"].nunique(),
            }
        ).fillna(0)
        per_check = per_check.assign(total=per_check.sum(axis=1)).sort_values(["total", "errors"], ascending=False)
        top = per_check.head(MAX_FAILED_CHECKS)
        counts = [(str(name), int(r.errors), int(r.warns)) for name, r in top.iterrows()]
        caption = "Courses where each check failed, by severity"
        if len(per_check) > len(top):
            caption += f" (the {len(top)} most frequent of {len(per_check)} failing checks)"
        body += figure(figures.failed_checks_svg(counts), caption + ".")
    return Section(sid, title, body, filled=True)


# -- DVH bands ---------------------------------------------------------------------------------


def dvh_bands_section(tables: CohortTables, max_structures: int = MAX_BAND_STRUCTURES) -> Section:
    """Median and interquartile DVH per structure present in at least two courses (small multiples)."""
    sid, title = "dvh-bands", "DVH bands"
    unreadable = [f"{name} ({why})" for name, why in tables.unreadable.items() if name.startswith("courses/")]
    unreadable_note = para(f"Could not be read: {'; '.join(unreadable)}.", "note") if unreadable else ""
    curves = tables.dvh_curves
    if curves is None or curves.empty:
        return _empty(
            sid, title, "no DVH curves: no course folder holds a dvh_curves.parquet with rows", unreadable_note
        )
    missing = [c for c in ("roi_name", "source", "dose_gy", "volume_pct") if c not in curves.columns]
    if missing:
        why = f"the courses' dvh_curves.parquet lack the column(s) {', '.join(missing)}"
        return _empty(sid, title, why, unreadable_note)
    metrics = tables.dvh_metrics
    metrics_problem = _problem(tables, "dvh_metrics", metrics, ("course_key", "roi_name", "source"))
    if metrics_problem:  # the curves are labelled by ROI name then; structure_labels says so
        metrics = None
        unreadable_note += para(f"{metrics_problem}.", "note")
    bands, label_note = dvh_bands(curves, metrics)
    n_courses = curves["course_key"].nunique()
    rule = para(f"Structure names: {label_note}. Source rule: {SOURCE_RULE}.", "note")
    if not bands:
        why = (
            f"no structure is present in at least {MIN_COURSES} courses ({count(n_courses, 'course')} with DVH curves)"
        )
        return _empty(sid, title, why, rule + unreadable_note)
    shown = bands[:max_structures]
    body = para(
        f"Cumulative DVH over the courses: the line is the median volume (%) at each dose, the band the "
        f"interquartile range (25th to 75th percentile); each course's curve is interpolated linearly on a common "
        f"dose axis. {count(len(bands), 'structure')} present in at least {MIN_COURSES} of the "
        f"{count(n_courses, 'course')} with DVH curves; n is the number of courses in each panel."
    )
    body += rule
    body += figure(figures.dvh_bands_svg(shown), f"DVH bands of the {len(shown)} most frequent structures.")
    if len(bands) > len(shown):
        left_out = ", ".join(b.label for b in bands[len(shown) :])
        body += para(f"{count(len(bands) - len(shown), 'structure')} left out (less frequent): {left_out}.", "note")
    return Section(sid, title, body + unreadable_note, filled=True)


# -- Unmapped structure names ------------------------------------------------------------------


def _candidates(value: object) -> str:
    """The candidates cell: a list (or array) joined, a string as it is."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(str(v) for v in value)
    return str(value)


def unmapped_section(tables: CohortTables) -> Section:
    """ROI names with no TG-263 standard name: in how many courses, the candidates, why."""
    sid, title = "unmapped", "Unmapped structure names"
    absent = (
        "no unmapped-structure table (cohort/unmapped_rois.parquet is absent: an output from before the "
        "TG-263 mapping of ROI names)"
    )
    if unusable := _unusable(tables, sid, title, "unmapped", ("roi_name",), absent):
        return unusable
    frame = tables.unmapped
    if frame.empty:
        return Section(sid, title, para("Every ROI name of the cohort maps to a TG-263 standard name."), True)
    columns = ["roi_name", "source", "n_courses", "n_rows", "candidates", "reason"]
    frame = frame.assign(**{c: None for c in columns if c not in frame.columns})
    frame = frame.sort_values(["n_courses", "roi_name"], ascending=[False, True], na_position="last")
    rows = [
        (r.roi_name, r.source, r.n_courses, r.n_rows, _candidates(r.candidates), r.reason)
        for r in frame[columns].itertuples(index=False)
    ]
    shown = rows[:MAX_UNMAPPED_ROWS]
    body = para(
        f"{count(len(rows), 'ROI name')} without a TG-263 standard name (no rule, or ambiguous: then the "
        "candidates); their rows carry no roi_std and the DVH bands group them by the name as contoured. A site "
        "adds them to its mapping file (settings science.roi_names)."
    )
    body += table(["ROI name", "source", "courses", "table rows", "candidates", "reason"], shown, numeric=(2, 3))
    return Section(sid, title, body + more_rows(len(shown), len(rows), "names"), filled=True)


# -- Auto vs manual agreement ------------------------------------------------------------------


def agreement_section(tables: CohortTables) -> Section:
    """Per standard structure: courses compared, median Dice, HD95 and MSD; Dice per structure."""
    sid, title = "agreement", "Auto vs manual agreement"
    absent = f"{NO_AGREEMENT}: cohort/agreement.parquet is absent."
    if unusable := _unusable(tables, sid, title, "agreement", ("course_key", "roi_std", "dice"), absent):
        return unusable
    frame = tables.agreement
    if frame.empty:
        return _empty(sid, title, f"{NO_AGREEMENT}: cohort/agreement.parquet has no rows.")
    frame = frame.assign(**{c: np.nan for c in ("hd95_mm", "msd_mm", "volume_ratio") if c not in frame.columns})
    frame = frame.assign(roi_std=frame["roi_std"].astype(str))
    stats = (
        frame.groupby("roi_std")
        .agg(
            n_courses=("course_key", "nunique"),
            n_pairs=("dice", "size"),
            dice=("dice", "median"),
            hd95_mm=("hd95_mm", "median"),
            msd_mm=("msd_mm", "median"),
            volume_ratio=("volume_ratio", "median"),
        )
        .sort_values(["dice", "roi_std"], ascending=[False, True], na_position="last")
    )
    sources = sorted(frame["source_auto"].dropna().astype(str).unique()) if "source_auto" in frame.columns else []
    body = para(
        f"Automatic contours ({', '.join(sources) or 'every automatic source'}) against the manual contour of the "
        f"same structure, in {count(frame['course_key'].nunique(), 'course')}: Dice similarity coefficient, 95th "
        "percentile Hausdorff distance (HD95) and mean surface distance (MSD) in mm, volume ratio auto / manual; "
        "medians per structure over the pairs (a course with several automatic sources gives several pairs)."
    )
    body += table(
        ["structure", "courses", "pairs", "median Dice", "median HD95 (mm)", "median MSD (mm)", "median volume ratio"],
        list(stats.reset_index().itertuples(index=False, name=None)),
        numeric=(1, 2, 3, 4, 5, 6),
    )
    plotted = list(stats.index[:MAX_AGREEMENT_STRUCTURES])
    groups = [(name, frame.loc[frame["roi_std"] == name, "dice"].to_numpy(dtype=float)) for name in plotted]
    caption = "Dice per structure (box: quartiles; points: one per pair), highest median first"
    if len(stats) > len(plotted):
        caption += f"; the first {len(plotted)} of {len(stats)} structures"
    svg = figures.strip_box_svg(groups, xlabel="Dice", label="Dice per structure", xlim=(0.0, 1.0))
    return Section(sid, title, body + figure(svg, caption + "."), filled=True)


# -- Radiomics robustness ----------------------------------------------------------------------


def feature_class(feature: str) -> str:
    """The pyradiomics feature class of a feature name (``<image type>_<class>_<feature>``, e.g.
    ``original_glcm_Contrast`` -> ``glcm``); ``other`` for a name without that shape."""
    parts = str(feature).split("_")
    return parts[-2] if len(parts) >= 3 else "other"


def _class_order(name: str) -> tuple[int, str]:
    return (FEATURE_CLASSES.index(name) if name in FEATURE_CLASSES else len(FEATURE_CLASSES), name)


def _share(icc: pd.Series, threshold: float) -> str:
    """Percent of ``icc`` (finite values) at or above ``threshold``, as text; a dash when there are none."""
    return f"{100.0 * float((icc >= threshold).mean()):.0f} %" if len(icc) else "–"


def robustness_section(tables: CohortTables) -> Section:
    """ICC per feature class: features, median and range, shares at or above 0.90 and 0.75; plot."""
    sid, title = "robustness", "Radiomics robustness"
    off = "robustness is off by default; `rtpipeline run --radiomics-robustness N` computes it"
    absent = f"no robustness table (cohort/radiomics_robustness.parquet is absent): {off}"
    if unusable := _unusable(tables, sid, title, "robustness", ("feature", "icc"), absent):
        return unusable
    frame = tables.robustness
    if frame.empty:
        return _empty(sid, title, f"cohort/radiomics_robustness.parquet has no rows: {off}")
    frame = frame.assign(
        feature_class=frame["feature"].map(feature_class),
        image_type=frame["feature"].map(lambda f: "_".join(str(f).split("_")[:-2]) or "other"),
        icc=pd.to_numeric(frame["icc"], errors="coerce"),
    )
    rows = []
    for name in sorted(frame["feature_class"].unique(), key=_class_order):
        icc = frame.loc[frame["feature_class"] == name, "icc"]
        finite = icc.dropna()
        rows.append(
            (
                name,
                len(icc),
                len(finite),
                finite.median() if len(finite) else np.nan,
                finite.min() if len(finite) else np.nan,
                finite.max() if len(finite) else np.nan,
                _share(finite, ICC_EXCELLENT),
                _share(finite, ICC_GOOD),
            )
        )
    design = ""
    if {"n_raters", "n_subjects"} <= set(frame.columns) and frame["n_raters"].notna().any():
        design = (
            f" over {int(frame['n_raters'].max())} perturbations of up to {int(frame['n_subjects'].max())} ROIs "
            "(each course and ROI a subject)"
        )
    image_types = sorted(frame["image_type"].unique())
    body = para(
        f"Intraclass correlation ICC(1,1) of each of {len(frame)} features{design}, by feature class"
        + (f" over the image types {', '.join(image_types)}" if len(image_types) > 1 else "")
        + f". Shares are of the features with an ICC: at or above {ICC_EXCELLENT} (excellent; robust after "
        f"Zwanenburg et al. 2019) and {ICC_GOOD} (good; Koo and Li 2016). A feature constant over every ROI and "
        "perturbation has no ICC."
    )
    body += table(
        [
            "class",
            "features",
            "with ICC",
            "median ICC",
            "min",
            "max",
            f"% ICC ≥ {ICC_EXCELLENT}",
            f"% ICC ≥ {ICC_GOOD}",
        ],
        rows,
        numeric=(1, 2, 3, 4, 5, 6, 7),
    )
    finite = frame["icc"].dropna()
    if finite.empty:
        why = "no feature has an ICC (every feature constant, or too few ROIs or perturbations)"
        return Section(sid, title, body + empty_note(why), filled=False, why_empty=why)
    groups = [(r[0], frame.loc[frame["feature_class"] == r[0], "icc"].to_numpy(dtype=float)) for r in rows]
    low = min(0.0, float(finite.min())) - 0.02
    svg = figures.strip_box_svg(
        groups,
        xlabel="ICC(1,1)",
        label="ICC per feature class",
        xlim=(low, 1.02),
        reference_lines=[(ICC_GOOD, str(ICC_GOOD)), (ICC_EXCELLENT, str(ICC_EXCELLENT))],
    )
    caption = "ICC per feature class (box: quartiles; points: one per feature); dashed: 0.75 and 0.90"
    return Section(sid, title, body + figure(svg, caption + "."), filled=True)


# -- Files not used and why --------------------------------------------------------------------

_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_FILE_ID = re.compile(r"\bf-[0-9a-f]{12}\b")


def _path_literals(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(text, file id) pairs that name a file of the table: its drop-relative path, and its file name
    where that is specific (has a digit or a dot, at least 5 characters); longest first (as
    :class:`rt_resources.privacy.Scrubber`, from the table's own file ids: no site secret needed)."""
    if "path" not in frame.columns or "file_id" not in frame.columns:
        return []
    literals: dict[str, str] = {}
    for path, fid in zip(frame["path"].astype(str), frame["file_id"].astype(str), strict=True):
        literals.setdefault(path, fid)
        name = path.rsplit("/", 1)[-1]
        if re.search(r"[.\d]", name) and len(name) >= 5:
            literals.setdefault(name, fid)
    return sorted(literals.items(), key=lambda kv: len(kv[0]), reverse=True)


#: reasons that name other files of the drop (rt_resources/ingest/linking.py): the kept copy of a
#: duplicate, the files of a conflict; paths may hold spaces, so they are found by these frames
_NAMED_FILES = (
    re.compile(r"(?<=duplicate of )(.+?)(?= \(same SOP Instance UID)"),
    re.compile(r"(?<=with different content \()(.+?)(?=\); none is used)"),
)
#: a path-like token that is left (no space in it): never shown
_PATH_TOKEN = re.compile(r"[^\s'\"()\[\],;]*/[^\s'\"()\[\],;]*")
OTHER_FILE = "<a file of the drop>"


def _scrub(text: str, literals: list[tuple[str, str]]) -> str:
    """``text`` with every drop path as its file id (a file of the table) or as OTHER_FILE."""
    ids = dict(literals)

    def named(match: re.Match) -> str:
        return ", ".join(ids.get(p, OTHER_FILE) for p in match.group(1).split(", "))

    for frame in _NAMED_FILES:
        text = frame.sub(named, text)
    for literal, fid in literals:
        if literal in text:
            text = text.replace(literal, fid)
    return _PATH_TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith("<drop>/") else OTHER_FILE, text)


def unused_section(tables: CohortTables) -> Section:
    """Files of the drop no course uses: counts per reason, and the files by file id."""
    sid, title = "unused", "Files not used and why"
    absent = "no ingest report (cohort/ingest_report.parquet is absent)"
    if unusable := _unusable(tables, sid, title, "ingest", ("reason",), absent):
        return unusable
    frame = tables.ingest
    if frame.empty:
        return Section(
            sid, title, para("Every file of the drop is used by a course (the ingest report is empty)."), True
        )
    frame = frame.assign(**{c: "" for c in ("file_id", "kind", "course_key", "stage") if c not in frame.columns})
    frame = frame.fillna("")
    literals = _path_literals(frame)
    frame = frame.assign(reason=frame["reason"].astype(str).map(lambda r: _scrub(r, literals)))
    frame = frame.assign(reason_kind=frame["reason"].map(lambda r: _FILE_ID.sub("<file>", _UID.sub("<UID>", r))))
    per_reason = (
        frame.groupby("reason_kind")
        .agg(n=("reason", "size"), kinds=("kind", lambda k: ", ".join(sorted({str(v) for v in k if v})) or "–"))
        .sort_values("n", ascending=False)
    )
    n_refused_by_courses = int((frame["stage"].astype(str) != "").sum())
    body = para(
        f"{count(len(frame), 'file')} of the drop not used by any course: {len(frame) - n_refused_by_courses} "
        f"refused by the linker, {n_refused_by_courses} by a course's own stage. Files appear by their file id (an "
        "HMAC of the drop-relative path: drop folders often carry patient names); cohort/ingest_report.parquet, read "
        "where the data root may be read, maps each id to its path. In the counts, UIDs read <UID>."
    )
    body += table(["reason", "files", "kinds"], list(per_reason.reset_index().itertuples(index=False, name=None)), (1,))
    ordered = frame.sort_values(["course_key", "stage", "file_id"])
    rows = [(r.file_id, r.kind, r.course_key, r.stage, r.reason) for r in ordered.itertuples(index=False)]
    shown = rows[:MAX_FILE_ROWS]
    body += table(["file id", "kind", "course", "stage", "reason"], shown)
    return Section(sid, title, body + more_rows(len(shown), len(rows), "files"), filled=True)


SECTIONS = (qc_section, dvh_bands_section, unmapped_section, agreement_section, robustness_section, unused_section)


def build_sections(tables: CohortTables) -> list[Section]:
    """Every section of the report, in page order."""
    return [make(tables) for make in SECTIONS]
