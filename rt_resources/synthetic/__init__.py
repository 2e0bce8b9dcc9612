"""Synthetic DICOM-RT course generator (CT, RTSTRUCT, RTPLAN, RTDOSE) for tests and demos.

Public API::

    write_patient(out_dir, index, options=SynthOptions(), patient_id=None, patient_name=None)
    write_cohort(out_dir, n_patients, options=SynthOptions())

Analytic ground truth for tests (patient coordinates, mm): ``make_phantom(options,
course_number).hu(x, y, z)`` (HU, noise-free) and ``.dose_gy(x, y, z, prescription_gy,
target)`` (Gy); ``course_context(...)`` also gives the CT grid, ``dose_grid(ctx)`` the
RTDOSE grid.
"""

from .cli_args import add_cli_arguments, options_from_args
from .cohort import BOOST, PRIMARY, course_context, write_cohort, write_patient
from .geometry import ORIENTATIONS, Grid
from .options import SynthCourse, SynthFile, SynthOptions, SynthPatient
from .phantom import (
    BOOST_FRACTIONS,
    BOOST_RX_GY,
    HU_AIR,
    HU_BONE,
    HU_LUNG,
    HU_SOFT_TISSUE,
    NOISE_HU,
    PRIMARY_FRACTIONS,
    PRIMARY_RX_GY,
    Ellipsoid,
    Phantom,
    make_phantom,
)
from .rtdose import dose_grid

__all__ = [
    "BOOST",
    "BOOST_FRACTIONS",
    "BOOST_RX_GY",
    "HU_AIR",
    "HU_BONE",
    "HU_LUNG",
    "HU_SOFT_TISSUE",
    "NOISE_HU",
    "ORIENTATIONS",
    "PRIMARY",
    "PRIMARY_FRACTIONS",
    "PRIMARY_RX_GY",
    "Ellipsoid",
    "Grid",
    "Phantom",
    "SynthCourse",
    "SynthFile",
    "SynthOptions",
    "SynthPatient",
    "add_cli_arguments",
    "course_context",
    "dose_grid",
    "make_phantom",
    "options_from_args",
    "write_cohort",
    "write_patient",
]
