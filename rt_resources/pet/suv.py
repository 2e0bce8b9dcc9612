"""Body-weight SUV scale factors of one PET series, the QIBA way, with every branch recorded.

Convention: QIBA FDG-PET/CT Profile, Appendix G, "Vendor-neutral pseudo-codes for SUV
calculation" (the 2018 "happy path" pseudo-code; its earlier, longer version for the scan time of
a post-processed series). Per slice, with the DICOM rescale (PS3.3 C.11.1.1.2, ``U = m*SV + b``):

    value = stored * RescaleSlope + RescaleIntercept    (missing slope/intercept: 1/0)
    Bq/ml = value * bqml_factor
    SUVbw = value * suv_bw_factor                       (g/ml)

The factors are per slice (:class:`SliceScale`) because the slope, and the Philips private
factors, may differ between slices (GE writes a slope per slice).

1. Gate (all units): CorrectedImage (0028,0051) contains ATTN and DECY, and DecayCorrection
   (0054,1102) is START, or ADMIN (see below); otherwise there is no SUV.
2. Units (0054,1001): BQML -> Bq/ml factor 1. CNTS (Philips) -> SUVbw factor = SUV Scale Factor
   (7053,1000), Bq/ml factor = Activity Concentration Scale Factor (7053,1009) when present; with
   (7053,1009) only, the SUV goes through the BQML path below. GML -> the values are SUVbw already
   (factor 1, as the pseudo-code assumes: GML means SUVbw, not SUVlbm), no Bq/ml. Anything else
   (PROPCNTS, CPS, ...) -> neither.
3. Scan time: SeriesDate/SeriesTime, unless that is after the earliest AcquisitionDate/
   AcquisitionTime of the series (a post-processed series whose series time is its creation
   time); then GE's private scan DateTime (0009,100D, creator "GEMS_PETD_01") when present, else
   the earliest acquisition date/time (the first option of the longer pseudo-code, which notes
   it is wrong for Siemens PETsyngo 3.x multi-injection studies; its alternative, back-computing
   from FrameReferenceTime, is not implemented). One scan time serves every slice: with DECY and
   START, all beds of a multi-bed series are decay corrected to the series time (PS3.3
   C.8.9.1.1.5), so per-bed AcquisitionTimes that differ are expected.
4. Start: RadiopharmaceuticalStartDateTime (0018,1078); else RadiopharmaceuticalStartTime
   (0018,1072) on the scan date, or the day before when that would be after the scan (injection
   before midnight). A full start DateTime after the scan time is an error in the record.
5. START: decayed dose = RadionuclideTotalDose * 2^(-(scan - start) / RadionuclideHalfLife);
   SUVbw factor = PatientWeight [kg] * 1000 / decayed dose [Bq] (g/Bq), times the Bq/ml factor.
   The total dose is not corrected for the residual activity in the syringe (nor is it in QIBA's).

SUVlbm (SUL) uses the Janmahasatian lean body mass, the formula QIBA Appendix H recommends
(Janmahasatian S et al., Quantification of lean bodyweight, Clin Pharmacokinet
2005;44(10):1051-65): LBM = 9270 W / (6680 + 216 BMI) for men, 9270 W / (8780 + 244 BMI) for
women, BMI = W / H^2 (W in kg, H = PatientSize (0010,1020) in m); SUVlbm = SUVbw * LBM / W.

Where this departs from the pseudo-code, and why:

- Rescale: the pseudo-code writes ``(stored + intercept) * slope``; DICOM defines
  ``slope * stored + intercept``. The PET Image module requires an intercept of 0, so the two
  agree on conforming data; we follow DICOM.
- DecayCorrection ADMIN: the pseudo-code covers START only. ADMIN images are decay corrected to
  the administration time (PS3.3 C.8.9.1.1.5), so the injected dose itself is the denominator
  (decay factor 1); no scan or start time is needed.
- Start date from RadiopharmaceuticalStartTime alone: the pseudo-code assumes the Series Date
  ("but consider spanning midnight"); we take the date of the chosen scan time, which differs
  only when the series was re-created on a later day, and the day before across midnight.
- A BQML (or CNTS) image that is not attenuation corrected gets no Bq/ml factor either: its
  values are not activity concentrations.
- Timezones: a DT with an offset is converted to TimezoneOffsetFromUTC (0008,0201) when present,
  else its offset is dropped (read as local time, like the DA/TM values); the branch says which.

Private tags are found through their private creator ("Philips PET Private Group",
"GEMS_PETD_01"; compared without case and padding). When the group has no private creator at all
(some anonymisers drop creators but keep the elements), the plain tag (7053,1000), (7053,1009) or
(0009,100D) is accepted and the branch says so; a block reserved by another creator is not read.

Libraries checked on PyPI before writing this (none is both maintained and complete):

- pysuv 0.1.0 (alpha, one release): times of day only (no RadiopharmaceuticalStartDateTime, no
  midnight crossing), vendor formulas chosen by Manufacturer instead of the series/acquisition
  time rule, no GE (0009,100D), and (7053,1000) read by plain tag without (7053,1009).
- autods-pet 0.1.0: a Deauville-score application whose SUV helper handles BQML only.
- lionz 1.0.7: a segmentation tool that reads (7053,1000) by plain tag, without decay or time checks.

The JavaScript package calculate-suv (cornerstonejs, npm) implements the same pseudo-code and
served as a cross-check of the branches.

Errors: :class:`SUVError` only when even the activity concentration is meaningless (no
datasets, a dataset that is not classic PET, more than one series, an unreadable rescale).
Everything else yields a :class:`PetScale` whose ``suv_bw_reason`` / ``bqml_reason`` say, naming
the tag, why a quantity is not available and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import pydicom
from pydicom import uid
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import DA, DT, TM

from rt_resources.dicom.sop_classes import PET_IMAGE

PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"
GE_PRIVATE_CREATOR = "GEMS_PETD_01"
#: (group, element offset in the private block): (7053,xx00) SUV Scale Factor
PHILIPS_SUV_SCALE = (0x7053, 0x00)
#: (7053,xx09) Activity Concentration Scale Factor (Bq/ml per count)
PHILIPS_BQML_SCALE = (0x7053, 0x09)
#: (0009,xx0D) GE PET scan DateTime (the decay reference of a post-processed series)
GE_SCAN_DATETIME = (0x0009, 0x0D)
#: PatientSize (0010,1020) is in metres; anything taller is almost surely centimetres
MAX_PLAUSIBLE_HEIGHT_M = 3.0
#: the longest plausible time from injection to scan, in half-lives of the radionuclide (F-18: 9.1 h;
#: Zr-89 imaged days later: 16 days): a wrong date or a clock skew read as "the day before" is far beyond
MAX_UPTAKE_HALF_LIVES = 5
#: below this an injected activity is not one (0.1 MBq): RadionuclideTotalDose written in MBq
MIN_PLAUSIBLE_DOSE_BQ = 1e5
#: above this a PatientWeight is in grams or pounds, not kg
MAX_PLAUSIBLE_WEIGHT_KG = 400.0


class SUVError(ValueError):
    """PET headers from which not even the activity concentration can be read, with where and why."""


@dataclass(frozen=True)
class SliceScale:
    """Scale factors of one PET slice, applied to ``stored * rescale_slope + rescale_intercept``."""

    sop_instance_uid: str
    rescale_slope: float
    rescale_intercept: float
    bqml_factor: float | None  #: Bq/ml per rescaled value; None when not known
    suv_bw_factor: float | None  #: SUVbw (g/ml) per rescaled value; None when no SUV


@dataclass(frozen=True)
class PetScale:
    """How to turn the stored values of one PET series into Bq/ml and SUV, and why."""

    units: str  #: Units (0054,1001) as found
    slices: list[SliceScale]  #: same order as the datasets given
    suv_bw_reason: str  #: "" when SUVbw is computable, else the reason a person reads
    bqml_reason: str  #: "" when the activity concentration is computable, else why
    branch: list[str]  #: the pseudo-code branches taken, in words
    inputs: dict  #: every input used, keyed with its unit (weight_kg, injected_dose_bq, ...)
    suv_lbm_factors: list[float] | None  #: SUVlbm per rescaled value, per slice; None when not computable
    suv_lbm_reason: str  #: "" when SUVlbm is computable, else why

    @property
    def has_suv(self) -> bool:
        """Whether every slice has an SUVbw factor."""
        return not self.suv_bw_reason and all(s.suv_bw_factor is not None for s in self.slices)

    @property
    def has_bqml(self) -> bool:
        """Whether every slice has a Bq/ml factor."""
        return not self.bqml_reason and all(s.bqml_factor is not None for s in self.slices)

    def to_json(self) -> dict:
        """A JSON-serializable record of the factors, the branches and the inputs (for lineage)."""
        return {
            "units": self.units,
            "has_suv": self.has_suv,
            "has_bqml": self.has_bqml,
            "suv_bw_reason": self.suv_bw_reason,
            "bqml_reason": self.bqml_reason,
            "suv_lbm_reason": self.suv_lbm_reason,
            "branch": list(self.branch),
            "inputs": dict(self.inputs),
            "slices": [
                {
                    "sop_instance_uid": s.sop_instance_uid,
                    "rescale_slope": s.rescale_slope,
                    "rescale_intercept": s.rescale_intercept,
                    "bqml_factor": s.bqml_factor,
                    "suv_bw_factor": s.suv_bw_factor,
                }
                for s in self.slices
            ],
            "suv_lbm_factors": None if self.suv_lbm_factors is None else list(self.suv_lbm_factors),
        }


# ---------------------------------------------------------------------------------------------
# small readers


def _get(ds: pydicom.Dataset, keyword: str):
    """``ds.get(keyword)``, or the raw bytes when pydicom cannot convert a malformed value."""
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        element = ds.get_item(tag_for_keyword(keyword))
        return getattr(element, "value", None)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = _get(ds, keyword)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return "" if value is None else str(value).strip("\x00 ")


def _codes(ds: pydicom.Dataset, keyword: str) -> list[str]:
    """A CS value of any multiplicity as a list of upper-case strings."""
    value = _get(ds, keyword)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ").split("\\")
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        value = [value]
    return [str(v).strip().upper() for v in value if str(v).strip()]


def _as_float(value) -> float | None:
    """A number from a DS/FD/str/bytes value (private elements may arrive as UN bytes)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ")
    if isinstance(value, MultiValue | list | tuple):
        if len(value) != 1:
            return None
        value = value[0]
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _positive(ds: pydicom.Dataset | None, keyword: str, tag: str, unit: str, missing_hint: str) -> tuple[float, str]:
    """A required positive number, or the reason a person reads (tag named)."""
    raw = None if ds is None else _get(ds, keyword)
    if raw is None or raw == "":
        return 0.0, f"{keyword} {tag} is missing: {missing_hint}"
    value = _as_float(raw)
    if value is None:
        return 0.0, f"{keyword} {tag} {raw!r} is not a number ({unit}): {missing_hint}"
    if not value > 0:
        return 0.0, f"{keyword} {tag} is {value:g} {unit}, not > 0: {missing_hint}"
    return value, ""


def _private_value(ds: pydicom.Dataset, group: int, offset: int, creator: str) -> tuple[object, str]:
    """The value of a private element found through its creator; ("", how) when absent.

    ``how`` says how the element was found: through the creator, or as the plain ``gggg,10xx``
    tag in a group that has no private creator at all.
    """
    any_creator = False
    for block in range(0x10, 0x100):
        creator_tag = Tag(group, block)
        if creator_tag not in ds:
            continue
        any_creator = True
        found = ds[creator_tag].value
        if isinstance(found, bytes):
            found = found.decode("ascii", "replace")
        if str(found).strip("\x00 ").lower() == creator.lower():
            tag = Tag(group, (block << 8) | offset)
            if tag in ds:
                return ds[tag].value, f"private creator {creator!r}"
            return None, ""
    if not any_creator:
        tag = Tag(group, 0x1000 | offset)
        if tag in ds:
            return ds[tag].value, f"plain tag ({group:04X},{0x1000 | offset:04X}), no private creator in the file"
    return None, ""


class _BadValue(ValueError):
    """A date/time value that does not parse (the message names the tag)."""


def _da(ds: pydicom.Dataset, keyword: str, tag: str) -> date | None:
    raw = _text(ds, keyword)
    if not raw:
        return None
    try:
        value = DA(raw)
    except ValueError as exc:
        raise _BadValue(f"{keyword} {tag} {raw!r} is not a DICOM date (DA, YYYYMMDD)") from exc
    return None if value is None else date(value.year, value.month, value.day)


def _tm(raw: str, keyword: str, tag: str) -> time | None:
    if not raw:
        return None
    try:
        value = TM(raw)
    except ValueError as exc:
        raise _BadValue(f"{keyword} {tag} {raw!r} is not a DICOM time (TM, HHMMSS.FFFFFF)") from exc
    return None if value is None else time(value.hour, value.minute, value.second, value.microsecond)


def _dt(raw, keyword: str, tag: str) -> datetime | None:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    raw = "" if raw is None else str(raw).strip("\x00 ")
    if not raw:
        return None
    digits = re.split(r"[.+-]", raw, maxsplit=1)[0]
    if len(digits) < 12 or not digits.isdigit():
        # a DT may legally stop at the date, and pydicom reads a cut value leniently: either would be
        # taken as midnight, hours off the real time
        raise _BadValue(f"{keyword} {tag} {raw!r} has no time of day (DT needs at least YYYYMMDDHHMM here)")
    try:
        value = DT(raw)
    except ValueError as exc:
        raise _BadValue(f"{keyword} {tag} {raw!r} is not a DICOM date-time (DT, YYYYMMDDHHMMSS.FFFFFF&ZZXX)") from exc
    if value is None:
        return None
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo,
    )


def _date_time(ds: pydicom.Dataset, date_kw: str, date_tag: str, time_kw: str, time_tag: str) -> datetime | None:
    d = _da(ds, date_kw, date_tag)
    t = _tm(_text(ds, time_kw), time_kw, time_tag)
    if d is None or t is None:
        return None
    return datetime.combine(d, t)


def _local_zone(ds: pydicom.Dataset) -> timezone | None:
    """TimezoneOffsetFromUTC (0008,0201) ("+HHMM") as a timezone, or None."""
    raw = _text(ds, "TimezoneOffsetFromUTC")
    if len(raw) != 5 or raw[0] not in "+-" or not raw[1:].isdigit():
        return None
    sign = 1 if raw[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(raw[1:3]), minutes=int(raw[3:5])))


def _naive(value: datetime, zone: timezone | None, what: str, branch: list[str]) -> datetime:
    """A DT with an offset as local time (TimezoneOffsetFromUTC when known, else offset dropped)."""
    if value.tzinfo is None:
        return value
    if zone is not None:
        branch.append(f"{what}: offset converted to TimezoneOffsetFromUTC (0008,0201)")
        return value.astimezone(zone).replace(tzinfo=None)
    branch.append(f"{what}: UTC offset dropped (no TimezoneOffsetFromUTC (0008,0201)); read as local time")
    return value.replace(tzinfo=None)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# ---------------------------------------------------------------------------------------------
# the pseudo-code, step by step


def _check_inputs(datasets: Sequence[pydicom.Dataset], where: Callable[[pydicom.Dataset], str]) -> None:
    if not datasets:
        raise SUVError("PET series has no datasets: pass the headers of every slice of one PET series")
    series = set()
    for ds in datasets:
        sop_class = _text(ds, "SOPClassUID")
        modality = _text(ds, "Modality")
        if sop_class == uid.EnhancedPETImageStorage or int(_as_float(_get(ds, "NumberOfFrames")) or 1) > 1:
            raise SUVError(f"{where(ds)}: multi-frame (Enhanced) PET is not supported; export classic PET images")
        if (sop_class and sop_class != PET_IMAGE) or (not sop_class and modality != "PT"):
            raise SUVError(
                f"{where(ds)}: SOP Class {sop_class or 'missing'} (Modality {modality or 'missing'}) is not "
                "PET Image Storage; SUV is computed for PET series only"
            )
        series_uid = _text(ds, "SeriesInstanceUID")
        if series_uid:
            series.add(series_uid)
    if len(series) > 1:
        raise SUVError(
            f"{len(series)} SeriesInstanceUIDs among the datasets ({', '.join(sorted(series))}): "
            "pass the slices of one PET series at a time"
        )


def _rescale(ds: pydicom.Dataset, where: Callable[[pydicom.Dataset], str]) -> tuple[float, float]:
    out = []
    for keyword, tag, default in (("RescaleSlope", "(0028,1053)", 1.0), ("RescaleIntercept", "(0028,1052)", 0.0)):
        raw = _get(ds, keyword)
        if raw is None or raw == "":
            out.append(default)
            continue
        value = _as_float(raw)
        if value is None:
            raise SUVError(f"{where(ds)}: {keyword} {tag} {raw!r} is not a number; the pixel values cannot be scaled")
        out.append(value)
    return out[0], out[1]


def _inconsistent(datasets: Sequence[pydicom.Dataset], keyword: str, tag: str, where) -> str:
    """A reason when a series-level attribute differs between slices, else ""."""

    def norm(ds: pydicom.Dataset) -> object:
        text = _text(ds, keyword)
        number = _as_float(text)  # "75" and "75.0" are one weight
        return text if number is None else number

    first = norm(datasets[0])
    for ds in datasets[1:]:
        if norm(ds) != first:
            return (
                f"{keyword} {tag} differs within the series ({first!r} in {where(datasets[0])}, "
                f"{_text(ds, keyword)!r} in {where(ds)}): re-export the series from one reconstruction"
            )
    return ""


def _gate(corrected: list[str], decay_correction: str) -> str:
    """Step 1: the reason there can be no SUV whatever the units, or ""."""
    found = "\\".join(corrected) or "missing"
    missing = [code for code in ("ATTN", "DECY") if code not in corrected]
    reasons = []
    if missing:
        what = {"ATTN": "attenuation", "DECY": "decay"}
        reasons.append(
            f"CorrectedImage (0028,0051) is {found}, without {' and '.join(missing)}: "
            f"the image is not {' and '.join(what[m] for m in missing)} corrected; "
            "SUV needs an attenuation- and decay-corrected reconstruction (export the AC series)"
        )
    if decay_correction not in ("START", "ADMIN"):
        reasons.append(
            f"DecayCorrection (0054,1102) is {decay_correction or 'missing'!r}: SUV needs images decay corrected "
            "to the acquisition start (START) or to the administration (ADMIN)"
        )
    return "; ".join(reasons)


def _scan_datetime(
    datasets: Sequence[pydicom.Dataset], zone: timezone | None, branch: list[str], inputs: dict
) -> tuple[datetime | None, str]:
    """Step 3: the decay reference time of a DECY START series."""
    first = datasets[0]
    try:
        series = _date_time(first, "SeriesDate", "(0008,0021)", "SeriesTime", "(0008,0031)")
        acquisitions = []
        for ds in datasets:
            acquired = _date_time(ds, "AcquisitionDate", "(0008,0022)", "AcquisitionTime", "(0008,0032)")
            if acquired is None and series is not None and not _text(ds, "AcquisitionDate"):
                # AcquisitionTime alone: on the series date (the pseudo-code's assumption), the day
                # before when that puts it more than 12 h after the series time (midnight)
                acquired_time = _tm(_text(ds, "AcquisitionTime"), "AcquisitionTime", "(0008,0032)")
                if acquired_time is not None:
                    acquired = datetime.combine(series.date(), acquired_time)
                    if acquired - series > timedelta(hours=12):
                        acquired -= timedelta(days=1)
            if acquired is None and _text(ds, "AcquisitionDateTime"):
                acquired = _dt(_get(ds, "AcquisitionDateTime"), "AcquisitionDateTime", "(0008,002A)")
                if acquired is not None:
                    acquired = _naive(acquired, zone, "AcquisitionDateTime", [])
            if acquired is not None:
                acquisitions.append(acquired)
    except _BadValue as exc:
        return None, f"{exc}: the scan time cannot be read; correct the header"
    if series is None:
        return None, (
            "SeriesDate (0008,0021) / SeriesTime (0008,0031) missing: the decay reference time of "
            "DecayCorrection START is unknown; export the series with its dates"
        )
    earliest = min(acquisitions) if acquisitions else None
    inputs["series_datetime"] = _iso(series)
    inputs["earliest_acquisition_datetime"] = _iso(earliest)
    if earliest is None:
        branch.append("scan time: SeriesDate/Time (no AcquisitionDate/Time in the series to check it against)")
        return series, ""
    if series <= earliest:
        branch.append("scan time: SeriesDate/Time (not after AcquisitionDate/Time)")
        return series, ""
    raw, how = _private_value(first, *GE_SCAN_DATETIME, GE_PRIVATE_CREATOR)
    try:
        ge = _dt(raw, "GE private scan DateTime", "(0009,100D)")
    except _BadValue as exc:
        return None, f"SeriesDate/Time is after the earliest AcquisitionDate/Time and {exc}; correct the header"
    if ge is not None:
        ge = _naive(ge, zone, "GE private scan DateTime", branch)
        inputs["ge_scan_datetime"] = _iso(ge)
        branch.append(
            f"scan time: GE private scan DateTime (0009,100D) ({how}); SeriesDate/Time is after the earliest "
            "AcquisitionDate/Time (post-processed series)"
        )
        return ge, ""
    branch.append(
        "scan time: earliest AcquisitionDate/Time of the series; SeriesDate/Time is after it and there is no "
        "GE private scan DateTime (0009,100D)"
    )
    return earliest, ""


def _start_datetime(
    drug: pydicom.Dataset, scan: datetime, zone: timezone | None, branch: list[str], max_uptake_s: float
) -> tuple[datetime | None, str]:
    """Step 4: the injection (administration) time. ``max_uptake_s``: the longest plausible time
    from injection to scan (:data:`MAX_UPTAKE_HALF_LIVES` half-lives)."""
    unreadable = ""
    try:
        start = _dt(_get(drug, "RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime", "(0018,1078)")
    except _BadValue as exc:  # the pseudo-code's fallback: the start time on the scan date
        start, unreadable = None, str(exc)
    if start is not None:
        start = _naive(start, zone, "RadiopharmaceuticalStartDateTime", branch)
        if start > scan:
            return None, (
                f"RadiopharmaceuticalStartDateTime (0018,1078) {start.isoformat()} is after the scan time "
                f"{scan.isoformat()}: the injection record or the scanner clock is wrong; correct the header"
            )
        branch.append("start: RadiopharmaceuticalStartDateTime")
        return start, ""
    try:
        start_time = _tm(_text(drug, "RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime", "(0018,1072)")
    except _BadValue as exc:
        return None, f"{'; '.join(filter(None, [unreadable, str(exc)]))}: the injection time cannot be read"
    if start_time is None:
        if unreadable:
            return None, f"{unreadable} and RadiopharmaceuticalStartTime (0018,1072) is missing: correct the header"
        return None, (
            "RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime (0018,1072) are both "
            "missing: the injection time is unknown; add it from the injection record"
        )
    fallback = f" ({unreadable})" if unreadable else ""
    start = datetime.combine(scan.date(), start_time)
    if start > scan:
        day_before = start - timedelta(days=1)
        if (scan - day_before).total_seconds() > max_uptake_s:
            return None, (
                f"RadiopharmaceuticalStartTime (0018,1072) {start_time.isoformat()} is after the scan time "
                f"{scan.time().isoformat()}, and on the day before it would be "
                f"{(scan - day_before).total_seconds():.0f} s before the scan, beyond any uptake time: the injection "
                "record or the scanner clock is wrong; correct the header"
            )
        branch.append(
            "start: RadiopharmaceuticalStartTime on the day before the scan date (start time of day after the "
            "scan time: injection before midnight)" + fallback
        )
        return day_before, ""
    branch.append("start: RadiopharmaceuticalStartTime on the scan date" + fallback)
    return start, ""


def _bqml_to_suv(
    datasets: Sequence[pydicom.Dataset], decay_correction: str, branch: list[str], inputs: dict
) -> tuple[float | None, str]:
    """Step 5: SUVbw per Bq/ml (g/Bq), or the reason(s) it cannot be had."""
    first = datasets[0]
    reasons = []
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    drug = sequence[0] if sequence else None
    if drug is None:
        reasons.append(
            "RadiopharmaceuticalInformationSequence (0054,0016) is missing or empty: the injected dose, half-life "
            "and injection time are unknown; export the series with its radiopharmaceutical record"
        )
    else:
        dose_bq, why = _positive(
            drug, "RadionuclideTotalDose", "(0018,1074)", "Bq", "the injected activity is needed for SUV"
        )
        reasons += [why] if why else []
        half_life_s, why = _positive(
            drug, "RadionuclideHalfLife", "(0018,1075)", "s", "the half-life is needed to decay the injected activity"
        )
        if decay_correction == "START":  # ADMIN needs no decay
            reasons += [why] if why else []
        if dose_bq and dose_bq < MIN_PLAUSIBLE_DOSE_BQ:
            reasons.append(
                f"RadionuclideTotalDose (0018,1074) is {dose_bq:g} Bq, less than {MIN_PLAUSIBLE_DOSE_BQ:g} Bq: "
                "probably written in MBq; the tag is in Bq, correct the header"
            )
        if dose_bq:
            inputs["injected_dose_bq"] = dose_bq
        if half_life_s:
            inputs["half_life_s"] = half_life_s
    weight_kg, why = _positive(
        first,
        "PatientWeight",
        "(0010,1030)",
        "kg",
        "SUVbw needs the patient's weight; add it from the clinical record (Bq/ml is still available)",
    )
    reasons += [why] if why else []
    if weight_kg > MAX_PLAUSIBLE_WEIGHT_KG:
        reasons.append(
            f"PatientWeight (0010,1030) is {weight_kg:g} kg, more than {MAX_PLAUSIBLE_WEIGHT_KG:g} kg: probably "
            "written in grams or pounds; the tag is in kg, correct the header"
        )
    if weight_kg:
        inputs["weight_kg"] = weight_kg

    decay_s = None
    if decay_correction == "ADMIN":
        branch.append("decay: ADMIN (image decay corrected to the administration time; decay factor 1)")
        decay_factor = 1.0
    elif drug is not None:
        zone = _local_zone(first)
        scan, why = _scan_datetime(datasets, zone, branch, inputs)
        if why:
            reasons.append(why)
        else:
            inputs["scan_datetime"] = _iso(scan)
            max_uptake_s = MAX_UPTAKE_HALF_LIVES * half_life_s if half_life_s else float("inf")
            start, why = _start_datetime(drug, scan, zone, branch, max_uptake_s)
            if why:
                reasons.append(why)
            else:
                inputs["start_datetime"] = _iso(start)
                decay_s = (scan - start).total_seconds()
                inputs["decay_s"] = decay_s
                if decay_s > max_uptake_s:
                    reasons.append(
                        f"{decay_s:.0f} s from the injection ({_iso(start)}) to the scan ({_iso(scan)}) is more "
                        f"than {MAX_UPTAKE_HALF_LIVES} half-lives of the radionuclide: a date or time in the header "
                        "is wrong; correct it"
                    )
                branch.append("decay: START (injected dose decayed from the start time to the scan time)")
    if reasons:
        return None, "; ".join(reasons)
    if decay_correction == "START":
        decay_factor = 2.0 ** (-decay_s / half_life_s)
    decayed_dose_bq = dose_bq * decay_factor
    inputs["decay_factor"] = decay_factor
    inputs["decayed_dose_bq"] = decayed_dose_bq
    g_per_bq = weight_kg * 1000.0 / decayed_dose_bq
    inputs["suv_bw_per_bqml_g_per_bq"] = g_per_bq
    return g_per_bq, ""


def _philips_factors(
    datasets: Sequence[pydicom.Dataset], element: tuple[int, int], name: str, tag: str, where
) -> tuple[list[float] | None, str, str]:
    """A Philips private factor of every slice: (factors, how found, reason when not usable)."""
    values, hows, absent = [], set(), []
    for ds in datasets:
        raw, how = _private_value(ds, *element, PHILIPS_PRIVATE_CREATOR)
        value = _as_float(raw)
        if value is None or not value > 0:
            absent.append(ds)
            continue
        values.append(value)
        hows.add(how)
    if not absent:
        return values, "; ".join(sorted(hows)), ""
    if len(absent) == len(datasets):
        return None, "", f"{name} {tag} is absent"
    count = f"{len(absent)} of {len(datasets)} slices"
    return None, "", f"{name} {tag} is absent or not > 0 in {count} (e.g. {where(absent[0])})"


def _lbm(first: pydicom.Dataset, weight_kg: float | None, inputs: dict) -> tuple[float | None, str]:
    """LBM/W (Janmahasatian 2005), or the reason it cannot be had."""
    if not weight_kg:
        return None, "SUVlbm needs PatientWeight (0010,1030)"
    height_m, why = _positive(first, "PatientSize", "(0010,1020)", "m", "SUVlbm needs the patient's height in metres")
    if why:
        return None, why
    if height_m > MAX_PLAUSIBLE_HEIGHT_M:
        return None, (
            f"PatientSize (0010,1020) is {height_m:g} m, implausible (the tag is in metres; centimetres written?): "
            "SUVlbm not computed; correct the header"
        )
    sex = _text(first, "PatientSex").upper()
    if sex not in ("M", "F"):
        return None, f"PatientSex (0010,0040) is {sex or 'missing'!r}: the Janmahasatian LBM needs M or F"
    bmi = weight_kg / height_m**2
    if sex == "M":
        lbm_kg = 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    else:
        lbm_kg = 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    inputs.update(height_m=height_m, sex=sex, bmi_kg_m2=bmi, lbm_kg=lbm_kg)
    return lbm_kg / weight_kg, ""


def pet_scale(datasets: Sequence[pydicom.Dataset], path_of: Callable[[pydicom.Dataset], str] | None = None) -> PetScale:
    """Scale factors to Bq/ml, SUVbw and SUVlbm of one PET series, from its headers (module docstring).

    ``datasets`` are the headers of every slice of one series (pixel data not needed);
    ``path_of`` gives a file name for messages (else the SOPInstanceUID is named). Raises
    :class:`SUVError` only for input that makes even the activity concentration meaningless;
    otherwise the reasons in the result say what is missing.
    """

    def where(ds: pydicom.Dataset) -> str:
        if path_of is not None:
            return str(path_of(ds))
        return f"SOPInstanceUID {_text(ds, 'SOPInstanceUID') or '(missing)'}"

    _check_inputs(datasets, where)
    rescales = [_rescale(ds, where) for ds in datasets]
    first = datasets[0]
    units = _text(first, "Units")
    corrected = _codes(first, "CorrectedImage")
    decay_correction = _text(first, "DecayCorrection").upper()
    branch: list[str] = []
    inputs: dict = {"units": units, "corrected_image": corrected, "decay_correction": decay_correction}
    n = len(datasets)

    units_reason = _inconsistent(datasets, "Units", "(0054,1001)", where)
    series_reasons = [
        r
        for r in (
            _inconsistent(datasets, kw, tag, where)
            for kw, tag in (
                ("DecayCorrection", "(0054,1102)"),
                ("CorrectedImage", "(0028,0051)"),
                ("SeriesDate", "(0008,0021)"),
                ("SeriesTime", "(0008,0031)"),
                ("PatientWeight", "(0010,1030)"),
            )
        )
        if r
    ]

    # Step 2: what the values are
    bqml: list[float] | None = None
    direct_suv: list[float] | None = None
    bqml_reason = suv_reason = ""
    via_bqml = False
    if units_reason:
        bqml_reason = suv_reason = units_reason
    elif units == "BQML":
        branch.append("Units BQML")
        bqml, via_bqml = [1.0] * n, True
    elif units == "CNTS":
        suv_factors, suv_how, suv_why = _philips_factors(
            datasets, PHILIPS_SUV_SCALE, "Philips SUV Scale Factor", "(7053,1000)", where
        )
        act_factors, act_how, act_why = _philips_factors(
            datasets, PHILIPS_BQML_SCALE, "Philips Activity Concentration Scale Factor", "(7053,1009)", where
        )
        if act_factors is not None:
            bqml = act_factors
            inputs["philips_activity_concentration_scale_factors"] = sorted(set(act_factors))
        else:
            bqml_reason = f"Units CNTS and {act_why}: the counts cannot be converted to Bq/ml"
        if suv_factors is not None:
            direct_suv = suv_factors
            inputs["philips_suv_scale_factors"] = sorted(set(suv_factors))
            branch.append(f"Units CNTS: Philips SUV Scale Factor (7053,1000) ({suv_how})")
        elif act_factors is not None:
            via_bqml = True
            branch.append(
                f"Units CNTS: {suv_why}; Philips Activity Concentration Scale Factor (7053,1009) ({act_how}) "
                "to Bq/ml, then as BQML"
            )
        else:
            suv_reason = (
                f"Units CNTS and {suv_why} and {act_why}: neither SUV nor Bq/ml can be had from Philips counts; "
                "export the series in BQML or with the Philips private group kept"
            )
            bqml_reason = suv_reason
    elif units == "GML":
        branch.append("Units GML (values are SUVbw already)")
        direct_suv = [1.0] * n
        bqml_reason = "Units GML (0054,1001): the values are SUVbw (g/ml), not an activity concentration"
    else:
        suv_reason = bqml_reason = (
            f"Units (0054,1001) is {units or 'missing'!r}: only BQML, CNTS (Philips) and GML can be scaled to "
            "SUV or Bq/ml; export the series in BQML"
        )

    # Step 1: the gate, for every unit; a non-attenuation-corrected image has no Bq/ml either
    if bqml is not None and "ATTN" not in corrected:
        bqml = None
        found = "\\".join(corrected) or "missing"
        bqml_reason = (
            f"CorrectedImage (0028,0051) is {found}, without ATTN: the values "
            "are not attenuation corrected, hence not activity concentrations"
        )
    if not suv_reason:
        gate = "; ".join(r for r in [_gate(corrected, decay_correction), *series_reasons] if r)
        if gate:
            suv_reason = gate
            direct_suv = None
            via_bqml = False

    # Steps 3-5: the BQML path
    suv: list[float] | None = direct_suv
    if via_bqml and not suv_reason:
        g_per_bq, why = _bqml_to_suv(datasets, decay_correction, branch, inputs)
        if why:
            suv_reason = why
        else:
            suv = [b * g_per_bq for b in bqml]
    elif direct_suv is not None:
        weight = _as_float(_get(first, "PatientWeight"))
        if weight and weight > 0:
            inputs["weight_kg"] = weight
    if suv is None and not suv_reason:  # defensive: every path above sets one or the other
        suv_reason = "SUVbw could not be computed"

    # SUVlbm
    lbm_factors = None
    if suv is None:
        lbm_reason = "no SUVbw (see suv_bw_reason)"
    else:
        ratio, lbm_reason = _lbm(first, inputs.get("weight_kg"), inputs)
        if ratio is not None:
            lbm_factors = [f * ratio for f in suv]
            branch.append("SUVlbm: Janmahasatian LBM")

    slices = [
        SliceScale(
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            rescale_slope=slope,
            rescale_intercept=intercept,
            bqml_factor=None if bqml is None else bqml[i],
            suv_bw_factor=None if suv is None else suv[i],
        )
        for i, (ds, (slope, intercept)) in enumerate(zip(datasets, rescales, strict=True))
    ]
    return PetScale(
        units=units,
        slices=slices,
        suv_bw_reason=suv_reason,
        bqml_reason="" if bqml is not None else (bqml_reason or "activity concentration not known"),
        branch=branch,
        inputs=inputs,
        suv_lbm_factors=lbm_factors,
        suv_lbm_reason=lbm_reason,
    )
