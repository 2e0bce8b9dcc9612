"""Synthetic DICOM-RT course generator (CT, RTSTRUCT, RTPLAN, RTDOSE; MR + REG) for tests and demos.

Public API::

    write_patient(out_dir, index, options=SynthOptions(), patient_id=None, patient_name=None)
    write_cohort(out_dir, n_patients, options=SynthOptions())

Analytic ground truth for tests (patient coordinates, mm): ``make_phantom(options,
course_number).hu(x, y, z)`` (HU, noise-free) and ``.dose_gy(x, y, z, prescription_gy,
target)`` (Gy); ``course_context(...)`` also gives the CT grid, ``dose_grid(ctx)`` the
RTDOSE grid. With ``SynthOptions(mr=True)`` each course also has an MR series in its own
frame of reference and a rigid REG; ``p_mr = R @ p_ct + t`` with ``mr_from_ct_matrix()``
(also ``SynthCourse.mr_from_ct``), ``t1_intensity(phantom, x, y, z)`` the noise-free MR
value at CT points, and ``mr_grid(ctx)`` the MR grid (MR patient coordinates).
"""

from .cli_args import add_cli_arguments, options_from_args
from .cohort import BOOST, PRIMARY, course_context, write_cohort, write_patient
from .geometry import ORIENTATIONS, Grid
from .mr import MR_LUNG, MR_NOISE, MR_ROTATION_DEG, MR_TRANSLATION_MM, mr_from_ct_matrix, mr_grid, t1_intensity
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
    "MR_LUNG",
    "MR_NOISE",
    "MR_ROTATION_DEG",
    "MR_TRANSLATION_MM",
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
    "mr_from_ct_matrix",
    "mr_grid",
    "options_from_args",
    "t1_intensity",
    "write_cohort",
    "write_patient",
]
