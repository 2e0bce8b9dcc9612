"""ROI names to AAPM TG-263 standard names, with the rule that found each one.

TG-263: Mayo CS et al., "American Association of Physicists in Medicine Task Group 263:
Standardizing Nomenclatures in Radiation Oncology", Int J Radiat Oncol Biol Phys
2018;100(4):1057-1066. The shipped table (``data/tg263.yaml``) lists the TG-263 primary name of
each organ at risk with its reverse-order name and the usual clinical spellings;
``data/totalsegmentator.yaml`` maps every TotalSegmentator ``total`` class to a TG-263 name or to
null (no TG-263 name). A site file extends both (below).

**Matching.** A name is folded to ASCII (Unicode NFKD, accents dropped) and compared on its
*key*: lower case, letters and digits only, so case, spaces, underscores, hyphens and dots do not
matter (``Brain stem`` is ``Brainstem``). For rules that look at the parts of a name it is split
into tokens at those characters and at camel case (``LtParotid`` -> ``lt parotid``). The first
rule that maps the name wins, in this order (``rule`` of the result):

1. ``totalsegmentator``: for ``source="totalseg"`` only, the class name in the TotalSegmentator
   map (site overrides first). A class mapped to null stays unmapped with that reason; a class
   not in the map goes on to the rules below.
2. ``site``, ``exact``, ``reverse order``, ``synonym``: the whole key is a site synonym (site
   entries win over the shipped ones), a TG-263 primary name, a reverse-order name or a shipped
   synonym. A key that the site file lists under two names is ambiguous (and stops here).
3. ``target``: GTV/CTV/ITV/IGTV/PTV, an optional classifier (p, n, sb, par, v, vas), an optional
   one-digit index and an optional dose level or High/Mid/Low, in TG-263 form:
   ``GTVp``, ``CTVn1``, ``PTV_High``, ``PTVp_7000``. The dose is written in cGy: ``PTV70``,
   ``PTV 70Gy``, ``PTV 70.0 Gy`` and ``PTV_7000`` are ``PTV_7000``; ``ptv_54.25`` is
   ``PTV_5425``. A number without unit is Gy when it has a decimal point or lies in 10-150,
   cGy from 200 up, and an index below 10 (``PTV_2`` is ``PTV2``); anything else is refused.
4. ``prv``: a ``PRV`` token with an optional margin (``PRV5``, ``PRV 03``, ``3mm`` at either end,
   ``0.5cm``) around a structure that maps by rule 2 or 6: ``SpinalCord_PRV05``,
   ``Brainstem_PRV03``, ``Parotid_L_PRV04``; ``SpinalCord_PRV`` when no margin is given. The
   margin is in whole mm, two digits (TG-263), appended after the laterality.
5. Optimization and evaluation structures: a leading ``z`` or ``_`` token, or an ``opt``/``eval``
   token at the start or the end (also fused: ``PTVopt``). When the rest maps by any other rule,
   an optimization structure gets TG-263's non-dosimetric ``z`` prefix and keeps its marker as a
   suffix (``Parotid_L_opt`` and ``opt Parotid L`` -> ``zParotid_L_opt``, ``zCord`` ->
   ``zSpinalCord``, ``PTV70_opt`` -> ``zPTV_7000_opt``; rule ``non-standard prefix``); an
   evaluation structure is used for dose evaluation, so it keeps the plain name with an
   ``_eval`` suffix (``PTV_eval`` -> ``PTV_eval``; rule ``evaluation``). When the rest does not
   map the ROI stays unmapped ("optimization structure" / "evaluation structure").
6. ``laterality``: only when the whole name did not match, a *separate* side token (L, R, Lt,
   Rt, Left, Right, Lft, Rgt) at the start or the end is removed and the rest looked up among
   the left/right structures of that side: ``Rt Parotid``, ``parotid right``, ``l_parotid``,
   ``Parotid_Lt`` -> ``Parotid_R``/``Parotid_L``. ``Larynx``, ``Lips``, ``Rectum``, ``Lens_L`` are
   whole-name matches and never reach this rule.

A name that is only the base of a left/right pair (``Parotid``, ``Lung``, ``Kidney``) is
ambiguous: unmapped, reason "ambiguous", with both sides as candidates (TG-263 names the pair
``Parotids``, ``Lungs``, ``Kidneys``). Bad names never raise: an empty name, a name longer than
64 characters (the DICOM LO limit of ROIName) and a name that is not ASCII after NFKD stay
unmapped with that reason.

**Site file** (``NameMap.load(site_yaml)``; settings ``science.roi_names``): a YAML mapping with
two optional keys. ``synonyms`` maps a TG-263 name of the shipped table (or a target name in
TG-263 form such as ``PTV_7000``) to a list of spellings; ``totalsegmentator`` maps a
TotalSegmentator class name to a TG-263 name or null. Site entries win over the shipped ones::

    # site mapping: extends/overrides the shipped tables
    synonyms:
      Parotid_L: ["LPar", "Parotid Lt opt"]
      SpinalCord: ["Myelon"]
    totalsegmentator:
      hip_left: null          # keep TotalSegmentator's hip bones unmapped here

A file that cannot be used raises :class:`NamingError` naming the file, the line and what is
wrong (YAML syntax, an unknown key, a name not in the TG-263 table with the closest names, a
value that is not a list of strings).

``NameMap.digest`` is the sha256 of the loaded content (shipped tables, site entries and
:data:`RULES_VERSION`), not of the files' bytes: comments do not change it, any entry does.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from rt_resources.course_paths import TOTALSEG

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_TABLE = DATA_DIR / "tg263.yaml"
SHIPPED_TOTALSEG = DATA_DIR / "totalsegmentator.yaml"
#: part of the digest: bump when a rule changes what a name maps to
RULES_VERSION = "1"
#: DICOM VR LO (ROIName, 3006,0026) holds at most 64 characters
MAX_NAME_CHARS = 64

EMPTY = "empty name"
NOT_ASCII = "not ASCII"
TOO_LONG = f"longer than {MAX_NAME_CHARS} characters"
AMBIGUOUS = "ambiguous"
NO_SIDE = "no side given"
NO_MATCH = "no match"
OPTIMIZATION = "optimization structure"
EVALUATION = "evaluation structure"
TARGET_UNCLEAR = "target name not understood"
PRV_UNCLEAR = "PRV margin not understood"
TOTALSEG_NULL = "TotalSegmentator class without a TG-263 name"

SITE_KEYS = ("synonyms", "totalsegmentator")
UNMAPPED_COLUMNS = ["roi_name", "source", "n_courses", "n_rows", "candidates", "reason"]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_STD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z]*\d+\.\d+[a-z]*|[a-z0-9]+")
_SIDES = {"l": "L", "lt": "L", "left": "L", "lft": "L", "r": "R", "rt": "R", "right": "R", "rgt": "R"}
_PRV = re.compile(r"prv(?P<mm>\d+(?:\.\d+)?)?(?P<unit>mm|cm)?")
_MARGIN = re.compile(r"(?P<mm>\d+(?:\.\d+)?)(?P<unit>mm|cm)?")
_TARGET_START = re.compile(r"igtv|gtv|ctv|itv|ptv")
_TARGET = re.compile(
    r"(?P<type>igtv|gtv|ctv|itv|ptv)_?(?P<cls>vas|par|sb|p|n|v)?(?P<idx>\d(?![\d.]))?"
    r"(?:_?(?P<level>high|hi|intermediate|medium|mid|med|int|low|lo)"
    r"|_?(?P<dose>\d+(?:\.\d+)?)_?(?P<unit>cgy|gy)?)?"
)
_MARKERS = ("opt", "eval")
#: a marker fused to the name (PTVopt): after at least two letters or digits
_FUSED_MARKER = re.compile(r"(?<=[A-Za-z0-9]{2})(opt|eval)$", re.IGNORECASE)
_LEVELS = {"high": "High", "hi": "High", "low": "Low", "lo": "Low"}


class NamingError(ValueError):
    """A mapping file that cannot be used: the message names the file, the line and the problem."""


@dataclass(frozen=True)
class StdName:
    """The TG-263 name of one ROI name, how it was found, or why there is none."""

    roi_name: str  #: the name as given
    roi_std: str | None  #: TG-263 name; None when unmapped or ambiguous
    rule: str  #: the rule that found it (module docstring); "" when unmapped
    candidates: tuple[str, ...]  #: every standard name an ambiguous name could be; else ()
    reason: str  #: why it is unmapped or ambiguous; "" when mapped


@dataclass(frozen=True)
class _Hit:
    std: str | None
    rule: str = ""
    candidates: tuple[str, ...] = ()
    reason: str = ""

    def renamed(self, fmt: str, rule: str) -> _Hit:
        """This hit with ``fmt.format(name)`` for its name and every candidate."""
        std = None if self.std is None else fmt.format(self.std)
        return _Hit(std, rule if std else "", tuple(fmt.format(c) for c in self.candidates), self.reason)


@dataclass(frozen=True)
class _Structure:
    name: str
    reverse: str | None
    synonyms: tuple[str, ...]


# --------------------------------------------------------------------------- text


def _ascii(text: str) -> str | None:
    """``text`` in ASCII after NFKD (accents dropped); None when that is not possible."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return folded if folded.isascii() else None


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_CAMEL.sub(" ", text).lower())


def _side_split(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """``(side, rest)`` for a side token at the start and at the end of ``tokens``."""
    if len(tokens) < 2:
        return []
    out = []
    if tokens[0] in _SIDES:
        out.append((_SIDES[tokens[0]], tokens[1:]))
    if tokens[-1] in _SIDES:
        out.append((_SIDES[tokens[-1]], tokens[:-1]))
    return out


def _pick(names: Iterable[str], rule: str) -> _Hit:
    found = sorted(set(names))
    if len(found) == 1:
        return _Hit(found[0], rule)
    return _Hit(None, "", tuple(found), AMBIGUOUS)


# --------------------------------------------------------------------------- targets


def _dose_level(dose: str, unit: str | None) -> tuple[int | None, int | None]:
    """``(dose_cgy, index)`` of a target's number (module docstring, rule 3); ``(None, None)``
    when it is neither."""
    value = float(dose)
    if unit == "gy" or (unit is None and "." in dose):
        cgy = value * 100
    elif unit == "cgy":
        cgy = value
    elif value < 10:
        return None, int(value)
    elif value <= 150:
        cgy = value * 100
    elif value >= 200:
        cgy = value
    else:
        return None, None
    if abs(cgy - round(cgy)) > 1e-6 or not 0 < round(cgy) <= 15000:
        return None, None
    return round(cgy), None


def _target(text: str) -> _Hit | None:
    """A target name in TG-263 form (rule 3); a refusal for a target name that does not parse."""
    compact = re.sub(r"(?<=\d),(?=\d)", ".", text.lower())
    compact = re.sub(r"[^a-z0-9.]+|\.(?!\d)|(?<!\d)\.", "_", compact).strip("_")
    if not _TARGET_START.match(compact):
        return None
    m = _TARGET.fullmatch(compact)
    if m is None:
        return _Hit(None, reason=TARGET_UNCLEAR)
    index, suffix = m["idx"] or "", ""
    if m["level"]:
        suffix = "_" + _LEVELS.get(m["level"], "Mid")
    elif m["dose"]:
        cgy, number = _dose_level(m["dose"], m["unit"])
        if number is not None and not index:
            index = str(number)
        elif cgy is not None:
            suffix = f"_{cgy}"
        else:
            return _Hit(None, reason=TARGET_UNCLEAR)
    return _Hit(f"{m['type'].upper()}{m['cls'] or ''}{index}{suffix}", "target")


# --------------------------------------------------------------------------- YAML files


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _fail(path: Path, node: yaml.Node | None, problem: str):
    where = f"{path}, line {_line(node)}" if node is not None else str(path)
    raise NamingError(f"{where}: {problem}")


def _compose(path: Path) -> yaml.Node | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NamingError(f"{path}: naming file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NamingError(f"{path}: cannot read the naming file ({exc})") from exc
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise NamingError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise NamingError(f"{path}: YAML syntax error: {exc}") from exc


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "nothing (null)"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"


def _string(path: Path, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG:
        _fail(path, node, f"{what} must be a string, got {_kind(node)} (quote it if it is a name)")
    if not node.value.strip():
        _fail(path, node, f"{what} is empty")
    return node.value.strip()


def _items(path: Path, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
    """The (key, value) nodes of a mapping; a key listed twice is an error."""
    if not isinstance(node, yaml.MappingNode):
        _fail(path, node, f"{what} must be a mapping, got {_kind(node)}")
    seen: dict[str, int] = {}
    for key, _ in node.value:
        name = _string(path, key, f"a key of {what}")
        if name in seen:
            _fail(path, key, f"{name!r} is listed twice in {what} (first on line {seen[name]})")
        seen[name] = _line(key)
    return list(node.value)


def _strings(path: Path, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.SequenceNode):
        _fail(path, node, f"{what} must be a list of strings, got {_kind(node)}")
    return [(_string(path, item, f"an entry of {what}"), item) for item in node.value]


def _spelling_key(path: Path, node: yaml.Node, text: str) -> str:
    folded = _ascii(text)
    if folded is None:
        _fail(path, node, f"{text!r} is not ASCII after NFKD normalization, so no ROI name can match it")
    key = _key(folded)
    if not key:
        _fail(path, node, f"{text!r} has no letter or digit to match on")
    return key


def _unknown(name: str, known: Iterable[str]) -> str:
    by_fold = {k.casefold(): k for k in known}
    close = difflib.get_close_matches(name.casefold(), list(by_fold), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_fold[c] for c in close)}?" if close else ""
    return f"{name!r} is not a name of the TG-263 table ({SHIPPED_TABLE.name}){hint}"


def _read_table(path: Path) -> dict[str, _Structure]:
    """The TG-263 table: ``structures``, a list of ``{name, reverse, synonyms}``. Every key (a
    name, reverse name or synonym) belongs to one structure only."""
    root = _compose(path)
    if root is None:
        _fail(path, None, "the TG-263 table is empty")
    top = {k.value: v for k, v in _items(path, root, "the table")}
    if set(top) != {"structures"} or not isinstance(top["structures"], yaml.SequenceNode):
        _fail(path, root, "the table must have one key, structures, a list of {name, reverse, synonyms}")
    structures: dict[str, _Structure] = {}
    owner: dict[str, tuple[str, int]] = {}  # key -> (structure, line)
    for item in top["structures"].value:
        fields = {k.value: (k, v) for k, v in _items(path, item, "a structure")}
        for extra in set(fields) - {"name", "reverse", "synonyms"}:
            _fail(path, fields[extra][0], f"unknown field {extra!r} (expected name, reverse, synonyms)")
        if "name" not in fields:
            _fail(path, item, "a structure without a name")
        name = _string(path, fields["name"][1], "name")
        if not _STD_NAME.fullmatch(name):
            _fail(path, fields["name"][1], f"{name!r} is not a TG-263 name (letters, digits and _)")
        reverse = _string(path, fields["reverse"][1], "reverse") if "reverse" in fields else None
        synonyms = _strings(path, fields["synonyms"][1], f"the synonyms of {name}") if "synonyms" in fields else []
        spellings = [(name, fields["name"][1])] + ([(reverse, fields["reverse"][1])] if reverse else []) + synonyms
        for text, node in spellings:
            key = _spelling_key(path, node, text)
            other = owner.setdefault(key, (name, _line(node)))
            if other[0] != name:
                _fail(path, node, f"{text!r} of {name} already names {other[0]} (line {other[1]})")
        structures[name] = _Structure(name, reverse, tuple(s for s, _ in synonyms))
    return structures


def _read_totalseg(path: Path, known: set[str], root: yaml.Node) -> dict[str, str | None]:
    """``class -> TG-263 name or None`` from a mapping node (``classes`` of the shipped file, or
    a site file's ``totalsegmentator``)."""
    out: dict[str, str | None] = {}
    for key, value in _items(path, root, "the TotalSegmentator classes"):
        if isinstance(value, yaml.ScalarNode) and value.tag == _NULL_TAG:
            out[key.value] = None
            continue
        name = _string(path, value, f"the TG-263 name of class {key.value!r}")
        if name not in known:
            _fail(path, value, _unknown(name, known))
        out[key.value] = name
    return out


def _read_shipped_totalseg(path: Path, known: set[str]) -> dict[str, str | None]:
    root = _compose(path)
    if root is None:
        _fail(path, None, "the TotalSegmentator map is empty")
    top = {k.value: v for k, v in _items(path, root, "the TotalSegmentator map")}
    if "classes" not in top:
        _fail(path, root, "the TotalSegmentator map needs a classes mapping")
    return _read_totalseg(path, known, top["classes"])


def _read_site(path: Path, known: set[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, str | None]]:
    """``(synonyms, totalsegmentator)`` of a site file (module docstring)."""
    root = _compose(path)
    if root is None:
        return {}, {}
    synonyms: dict[str, tuple[str, ...]] = {}
    totalseg: dict[str, str | None] = {}
    for key, value in _items(path, root, "the site file"):
        if key.value not in SITE_KEYS:
            close = difflib.get_close_matches(key.value, SITE_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            _fail(path, key, f"unknown top-level key {key.value!r} (expected {' or '.join(SITE_KEYS)}){hint}")
        if key.value == "totalsegmentator":
            totalseg = _read_totalseg(path, known, value)
            continue
        for std_node, spellings in _items(path, value, "synonyms"):
            std = std_node.value
            if std not in known and _target_name(std) != std:
                _fail(path, std_node, _unknown(std, known) + " (or a TG-263 target name such as PTV_7000)")
            listed = _strings(path, spellings, f"the synonyms of {std}")
            for text, node in listed:
                _spelling_key(path, node, text)
            synonyms[std] = tuple(text for text, _ in listed)
    return synonyms, totalseg


def _target_name(name: str) -> str | None:
    hit = _target(name)
    return hit.std if hit is not None else None


# --------------------------------------------------------------------------- the map


class NameMap:
    """The shipped TG-263 and TotalSegmentator tables, plus a site's entries (module docstring)."""

    def __init__(
        self,
        structures: dict[str, _Structure],
        totalseg: dict[str, str | None],
        site_synonyms: dict[str, tuple[str, ...]] | None = None,
        site_totalseg: dict[str, str | None] | None = None,
        files: tuple[Path, ...] = (),
    ):
        self.structures = dict(structures)
        self.standard_names = frozenset(self.structures)
        self.site_synonyms = dict(site_synonyms or {})
        self.totalseg = {**totalseg, **(site_totalseg or {})}
        self.shipped_totalseg = dict(totalseg)
        self.site_totalseg = dict(site_totalseg or {})
        self.files = files
        self._totalseg_folded = {k.casefold(): v for k, v in self.totalseg.items()}
        self._shipped: dict[str, tuple[str, str]] = {}  # key -> (name, rule)
        self._sides: dict[str, dict[str, set[str]]] = {}  # base key -> side -> names
        for s in self.structures.values():
            spellings = [(s.name, "exact")] + ([(s.reverse, "reverse order")] if s.reverse else [])
            for text, rule in spellings + [(syn, "synonym") for syn in s.synonyms]:
                self._shipped.setdefault(_key(_ascii(text) or ""), (s.name, rule))
            _add_sides(self._sides, s.name, [text for text, _ in spellings] + list(s.synonyms))
        self._site: dict[str, set[str]] = {}
        self._site_sides: dict[str, dict[str, set[str]]] = {}
        for std, spellings in self.site_synonyms.items():
            for text in spellings:
                self._site.setdefault(_key(_ascii(text) or ""), set()).add(std)
            _add_sides(self._site_sides, std, spellings)
        canonical = {
            "rules": RULES_VERSION,
            "structures": {s.name: [s.reverse, sorted(s.synonyms)] for s in self.structures.values()},
            "totalsegmentator": totalseg,
            "site_synonyms": {k: sorted(v) for k, v in self.site_synonyms.items()},
            "site_totalsegmentator": self.site_totalseg,
        }
        self.digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        self._cache: dict[tuple[str, str], StdName] = {}

    @classmethod
    def load(cls, site_yaml: Path | str | None = None) -> NameMap:
        """The shipped tables, extended by the site file at ``site_yaml`` when given."""
        structures = _read_table(SHIPPED_TABLE)
        known = set(structures)
        totalseg = _read_shipped_totalseg(SHIPPED_TOTALSEG, known)
        files = (SHIPPED_TABLE, SHIPPED_TOTALSEG)
        if site_yaml is None:
            return cls(structures, totalseg, files=files)
        site = Path(site_yaml)
        synonyms, site_totalseg = _read_site(site, known)
        return cls(structures, totalseg, synonyms, site_totalseg, files + (site,))

    # ------------------------------------------------------------------ lookups

    def standardize(self, roi_name: str, source: str = "manual") -> StdName:
        """The TG-263 name of ``roi_name`` from ``source`` (a mask source: ``manual``,
        ``totalseg``, ...), or why there is none. Never raises for a bad name."""
        name = roi_name if isinstance(roi_name, str) else ""
        source = source if isinstance(source, str) else ""
        cached = self._cache.get((name, source))
        if cached is None:
            hit = self._standardize(name, source)
            cached = StdName(name, hit.std, hit.rule if hit.std else "", hit.candidates, hit.reason)
            self._cache[(name, source)] = cached
        return cached

    def _standardize(self, name: str, source: str) -> _Hit:
        text = name.strip()
        if not text:
            return _Hit(None, reason=EMPTY)
        if len(text) > MAX_NAME_CHARS:
            return _Hit(None, reason=TOO_LONG)
        folded = _ascii(text)
        if folded is None:
            return _Hit(None, reason=NOT_ASCII)
        if source == TOTALSEG and (text in self.totalseg or text.casefold() in self._totalseg_folded):
            std = self.totalseg[text] if text in self.totalseg else self._totalseg_folded[text.casefold()]
            return _Hit(std, "totalsegmentator") if std else _Hit(None, reason=TOTALSEG_NULL)
        rules = (self._whole, _target, self._prv, self._marked, self._lateral, self._sideless)
        return self._first(folded, rules) or _Hit(None, reason=NO_MATCH)

    def _first(self, text: str, rules) -> _Hit | None:
        """The first rule's hit that maps ``text``; else the first refusal (a whole-name ambiguity
        ends the search at once)."""
        refusal = None
        for rule in rules:
            hit = rule(text)
            if hit is None:
                continue
            if hit.std is not None or rule == self._whole:
                return hit
            refusal = refusal or hit
        return refusal

    def _whole(self, text: str) -> _Hit | None:
        key = _key(text)
        if key in self._site:
            return _pick(self._site[key], "site")
        if key in self._shipped and not text.startswith("_"):  # _Name is an optimization structure
            name, rule = self._shipped[key]
            return _Hit(name, rule)
        return None

    def _lateral(self, text: str) -> _Hit | None:
        for sides in (self._site_sides, self._sides):
            names = {n for side, rest in _side_split(_tokens(text)) for n in sides.get("".join(rest), {}).get(side, ())}
            if names:
                return _pick(names, "laterality")
        return None

    def _sideless(self, text: str) -> _Hit | None:
        for sides in (self._site_sides, self._sides):
            by_side = sides.get(_key(text))
            if by_side:
                names = tuple(sorted(set().union(*by_side.values())))
                return _Hit(None, "", names, AMBIGUOUS if len(names) > 1 else NO_SIDE)
        return None

    def _organ(self, text: str) -> _Hit | None:
        return self._first(text, (self._whole, self._lateral, self._sideless))

    def _prv(self, text: str) -> _Hit | None:
        tokens = _tokens(text)
        at = [i for i, t in enumerate(tokens) if _PRV.fullmatch(t)]
        if len(at) != 1:
            return None
        i = at[0]
        m = _PRV.fullmatch(tokens[i])
        rest = tokens[:i] + tokens[i + 1 :]
        mm, unit = m["mm"], m["unit"]
        if mm is None and i < len(rest) and (n := _MARGIN.fullmatch(rest[i])):
            mm, unit = n["mm"], n["unit"]
            del rest[i]
            if unit is None and i < len(rest) and rest[i] in ("mm", "cm"):
                unit = rest.pop(i)
        elif mm is None and rest and i in (0, len(tokens) - 1):
            if len(rest) > 1 and rest[-1] in ("mm", "cm") and (n := _MARGIN.fullmatch(rest[-2])) and not n["unit"]:
                mm, unit = n["mm"], rest[-1]
                del rest[-2:]
            elif n := _MARGIN.fullmatch(rest[-1]):
                mm, unit = n["mm"], n["unit"]
                del rest[-1]
        suffix = "_PRV"
        if mm is not None:
            margin_mm = float(mm) * (10 if unit == "cm" else 1)
            if abs(margin_mm - round(margin_mm)) > 1e-6 or not 1 <= round(margin_mm) <= 99:
                return _Hit(None, reason=PRV_UNCLEAR)
            suffix += f"{round(margin_mm):02d}"
        base = self._organ(" ".join(rest)) if rest else None
        return None if base is None else base.renamed("{}" + suffix, "prv")

    def _marked(self, text: str) -> _Hit | None:
        z = text.startswith("_")
        kind = None
        fused = _FUSED_MARKER.search(text)
        tokens = _tokens(text)
        if tokens and tokens[0] in _MARKERS:
            kind, tokens = tokens[0], tokens[1:]
        elif tokens and tokens[-1] in _MARKERS:
            kind, tokens = tokens[-1], tokens[:-1]
        elif fused:
            kind, tokens = fused[1].lower(), _tokens(text[: fused.start()])
        if tokens and tokens[0] == "z":
            z, tokens = True, tokens[1:]
        if not z and kind is None:
            return None
        z = z or kind == "opt"
        reason = OPTIMIZATION if z else EVALUATION
        rest = " ".join(tokens)
        hit = self._first(rest, (self._whole, _target, self._prv, self._lateral, self._sideless)) if rest else None
        if hit is None or (hit.std is None and not hit.candidates):
            return _Hit(None, reason=reason)
        fmt = ("z" if z else "") + "{}" + (f"_{kind}" if kind else "")
        return hit.renamed(fmt, "non-standard prefix" if z else "evaluation")

    # ------------------------------------------------------------------ tables

    def frame(self, names: pd.DataFrame) -> pd.DataFrame:
        """``names`` (with ``roi_name`` and ``source`` columns) plus ``roi_std`` and
        ``roi_std_rule`` (``""`` when unmapped), rows in the same order."""
        missing = [c for c in ("roi_name", "source") if c not in names.columns]
        if missing:
            raise ValueError(f"NameMap.frame: the table has no column {', '.join(missing)} (columns: {list(names)})")
        found = [self.standardize(n, s) for n, s in zip(names["roi_name"], names["source"], strict=True)]
        out = names.copy()
        out["roi_std"] = pd.Series([f.roi_std for f in found], index=names.index, dtype=object)
        out["roi_std_rule"] = pd.Series([f.rule for f in found], index=names.index, dtype=object)
        return out

    def describe_markdown(self, limit: int = 60) -> str:
        """The mapping in use as markdown for the Dagster UI: entries per table, then up to
        ``limit`` rows (site entries first, then TotalSegmentator, then shipped synonyms)."""
        mapped = sum(v is not None for v in self.shipped_totalseg.values())
        site_file = self.files[2].name if len(self.files) > 2 else "none"
        counts = [
            ("TG-263 structures (shipped)", len(self.structures)),
            ("TG-263 synonyms (shipped)", sum(len(s.synonyms) for s in self.structures.values())),
            (
                "TotalSegmentator classes (shipped)",
                f"{len(self.shipped_totalseg)} ({mapped} mapped, {len(self.shipped_totalseg) - mapped} null)",
            ),
            (f"site synonyms ({site_file})", sum(len(v) for v in self.site_synonyms.values())),
            (f"site TotalSegmentator classes ({site_file})", len(self.site_totalseg)),
        ]
        rows = [(syn, std, "site") for std, syns in self.site_synonyms.items() for syn in syns]
        rows += [(c, std or "(none)", "site TotalSegmentator") for c, std in self.site_totalseg.items()]
        rows += [(c, std or "(none)", "TotalSegmentator") for c, std in self.shipped_totalseg.items()]
        rows += [(syn, s.name, "synonym") for s in self.structures.values() for syn in s.synonyms]
        lines = [f"TG-263 structure names, mapping sha256 `{self.digest[:12]}`", "", "| table | entries |", "|---|---|"]
        lines += [f"| {what} | {n} |" for what, n in counts]
        lines += ["", "| name | TG-263 name | table |", "|---|---|---|"]
        lines += [f"| {_md(a)} | {_md(b)} | {c} |" for a, b, c in rows[: max(limit, 0)]]
        if len(rows) > limit:
            lines.append(f"\n{len(rows) - max(limit, 0)} more rows not shown")
        return "\n".join(lines)


def _add_sides(index: dict[str, dict[str, set[str]]], name: str, spellings: Iterable[str]) -> None:
    """Index the base of each spelling of a left/right structure (``Parotid Gland L`` ->
    ``parotidgland``, side L) under the structure's own side."""
    side = name[-1] if name.endswith(("_L", "_R")) else None
    for text in spellings:
        for found, rest in _side_split(_tokens(_ascii(text) or "")):
            if side is None or found == side:
                index.setdefault("".join(rest), {}).setdefault(found, set()).add(name)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def unmapped_table(rows: pd.DataFrame, name_map: NameMap | None = None) -> pd.DataFrame:
    """One row per distinct ``(roi_name, source)`` of ``rows`` without a TG-263 name:
    ``roi_name, source, n_courses, n_rows, candidates`` (``"; "``-joined), ``reason``; most
    courses first.

    ``rows`` needs ``course_key``, ``roi_name`` and ``source``; a ``roi_std`` column (from
    :meth:`NameMap.frame`) decides which rows are unmapped, else ``name_map`` does. Candidates and
    reason come from ``name_map`` (default: the shipped tables without a site file), so pass the
    map that made ``roi_std``.
    """
    names = name_map if name_map is not None else NameMap.load()
    missing = [c for c in ("course_key", "roi_name", "source") if c not in rows.columns]
    if missing:
        raise ValueError(f"unmapped_table: the table has no column {', '.join(missing)} (columns: {list(rows)})")
    if "roi_std" in rows.columns:
        unmapped = rows[rows["roi_std"].isna()]
    else:
        found = [names.standardize(n, s).roi_std for n, s in zip(rows["roi_name"], rows["source"], strict=True)]
        unmapped = rows[pd.Series([f is None for f in found], index=rows.index, dtype=bool)]
    if not len(unmapped):
        return pd.DataFrame({c: pd.Series(dtype="int64" if c.startswith("n_") else object) for c in UNMAPPED_COLUMNS})
    keys = unmapped[["roi_name", "source"]].astype(object).where(unmapped[["roi_name", "source"]].notna(), "")
    grouped = unmapped.assign(roi_name=keys["roi_name"], source=keys["source"]).groupby(
        ["roi_name", "source"], sort=False
    )
    out = grouped.agg(n_courses=("course_key", "nunique"), n_rows=("course_key", "size")).reset_index()
    details = [names.standardize(n, s) for n, s in zip(out["roi_name"], out["source"], strict=True)]
    out["candidates"] = ["; ".join(d.candidates) for d in details]
    out["reason"] = [d.reason or f"roi_std is empty, but this mapping gives {d.roi_std}" for d in details]
    out = out.sort_values(["n_courses", "n_rows", "roi_name", "source"], ascending=[False, False, True, True])
    return out[UNMAPPED_COLUMNS].reset_index(drop=True)
