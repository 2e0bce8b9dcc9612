"""Arguments of the ``rtpipeline synth`` subcommand (wired by the project CLI).

``--realistic`` starts from the clinical-size preset (``realistic.REALISTIC``: 512 x 512 x 160,
0.977 mm pixels, 2.5 mm slices) instead of the small default; a size flag given with it
(``--rows``, ``--slices``, ``--pixel-mm``, ``--slice-mm``) still wins for that one value, so
``--realistic --slices 40`` is a clinical-size CT of 40 slices.
"""

from __future__ import annotations

import argparse

from .options import DEFAULT_OPTIONS as _DEFAULTS
from .options import PATIENT_POSITIONS, PET_CHOICES, SynthOptions
from .realistic import REALISTIC

#: the size flags: ``argparse`` destination -> SynthOptions field (both spelled the same)
_SIZE_FIELDS = ("rows", "slices", "pixel_mm", "slice_mm")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --out, --patients, --realistic and the SynthOptions flags to ``parser``.

    The size flags are absent from the namespace unless given (``argparse.SUPPRESS``), so that
    ``options_from_args`` can tell an explicit value from the preset's; their help says the value
    each preset uses.
    """
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--patients", type=int, default=1, help="number of patients (default 1)")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help=f"clinical-size CT: {REALISTIC.rows} x {REALISTIC.rows} x {REALISTIC.slices}, "
        f"{REALISTIC.pixel_mm} mm pixels, {REALISTIC.slice_mm} mm slices (size flags given with it still win)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=argparse.SUPPRESS,
        help=f"CT matrix size (rows = columns); default {_DEFAULTS.rows}, {REALISTIC.rows} with --realistic",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=argparse.SUPPRESS,
        help=f"number of CT slices; default {_DEFAULTS.slices}, {REALISTIC.slices} with --realistic",
    )
    parser.add_argument(
        "--pixel-mm",
        type=float,
        default=argparse.SUPPRESS,
        help=f"in-plane pixel spacing, mm; default {_DEFAULTS.pixel_mm}, {REALISTIC.pixel_mm} with --realistic",
    )
    parser.add_argument(
        "--slice-mm",
        type=float,
        default=argparse.SUPPRESS,
        help=f"slice spacing, mm; default {_DEFAULTS.slice_mm}, {REALISTIC.slice_mm} with --realistic",
    )
    parser.add_argument("--boost", action="store_true", help="add a boost plan and dose")
    parser.add_argument("--second-course", action="store_true", help="add a second course (new study)")
    parser.add_argument("--beam-doses", action="store_true", help="primary dose as one RTDOSE per beam")
    parser.add_argument(
        "--mr", action="store_true", help="add an MR series (own frame of reference) and a rigid REG to the CT"
    )
    parser.add_argument(
        "--pet",
        nargs="?",
        const="cycle",
        default=_DEFAULTS.pet,
        choices=PET_CHOICES,
        metavar="VENDOR",
        help="add a PET series (PET/CT: the CT's frame of reference) with VENDOR's SUV headers: "
        f"{', '.join(PET_CHOICES)}; without a value 'cycle' (the vendor by patient index)",
    )
    parser.add_argument(
        "--patient-position",
        choices=PATIENT_POSITIONS,
        default=_DEFAULTS.patient_position,
        help="patient position",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed for UIDs and noise")


def options_from_args(args: argparse.Namespace) -> SynthOptions:
    """SynthOptions from parsed arguments (``--out``/``--patients`` are read by the caller).

    Sizes come from ``REALISTIC`` with ``--realistic`` and from the default otherwise; a size
    flag that was given (present and not None) replaces the preset's value.
    """
    preset = REALISTIC if getattr(args, "realistic", False) else _DEFAULTS
    sizes = {}
    for name in _SIZE_FIELDS:
        given = getattr(args, name, None)
        sizes[name] = getattr(preset, name) if given is None else given
    return SynthOptions(
        **sizes,
        boost=args.boost,
        second_course=args.second_course,
        beam_doses=args.beam_doses,
        patient_position=args.patient_position,
        seed=args.seed,
        mr=args.mr,
        pet=getattr(args, "pet", _DEFAULTS.pet) or "",
    )
