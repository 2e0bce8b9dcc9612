"""Arguments of the ``rtpipeline synth`` subcommand (wired by the project CLI)."""

from __future__ import annotations

import argparse

from .options import DEFAULT_OPTIONS as _DEFAULTS
from .options import PATIENT_POSITIONS, SynthOptions


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --out, --patients and the SynthOptions flags to ``parser``."""
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--patients", type=int, default=1, help="number of patients (default 1)")
    parser.add_argument(
        "--rows",
        type=int,
        default=_DEFAULTS.rows,
        help="CT matrix size (rows = columns)",
    )
    parser.add_argument("--slices", type=int, default=_DEFAULTS.slices, help="number of CT slices")
    parser.add_argument(
        "--pixel-mm",
        type=float,
        default=_DEFAULTS.pixel_mm,
        help="in-plane pixel spacing, mm",
    )
    parser.add_argument("--slice-mm", type=float, default=_DEFAULTS.slice_mm, help="slice spacing, mm")
    parser.add_argument("--boost", action="store_true", help="add a boost plan and dose")
    parser.add_argument("--second-course", action="store_true", help="add a second course (new study)")
    parser.add_argument("--beam-doses", action="store_true", help="primary dose as one RTDOSE per beam")
    parser.add_argument(
        "--mr", action="store_true", help="add an MR series (own frame of reference) and a rigid REG to the CT"
    )
    parser.add_argument(
        "--patient-position",
        choices=PATIENT_POSITIONS,
        default=_DEFAULTS.patient_position,
        help="patient position",
    )
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed for UIDs and noise")


def options_from_args(args: argparse.Namespace) -> SynthOptions:
    """SynthOptions from parsed arguments (``--out``/``--patients`` are read by the caller)."""
    return SynthOptions(
        rows=args.rows,
        slices=args.slices,
        pixel_mm=args.pixel_mm,
        slice_mm=args.slice_mm,
        boost=args.boost,
        second_course=args.second_course,
        beam_doses=args.beam_doses,
        patient_position=args.patient_position,
        seed=args.seed,
        mr=args.mr,
    )
