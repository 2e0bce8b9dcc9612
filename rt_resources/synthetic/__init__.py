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

import importlib

#: public name -> the submodule that defines it; loaded on first use (PEP 562), so importing one
#: light submodule (the CLI's ``cli_args``) does not load the whole generator
_SOURCES = {
    "add_cli_arguments": "cli_args",
    "options_from_args": "cli_args",
    "BOOST": "cohort",
    "PRIMARY": "cohort",
    "course_context": "cohort",
    "write_cohort": "cohort",
    "write_patient": "cohort",
    "ORIENTATIONS": "geometry",
    "Grid": "geometry",
    "MR_LUNG": "mr",
    "MR_NOISE": "mr",
    "MR_ROTATION_DEG": "mr",
    "MR_TRANSLATION_MM": "mr",
    "mr_from_ct_matrix": "mr",
    "mr_grid": "mr",
    "t1_intensity": "mr",
    "SynthCourse": "options",
    "SynthFile": "options",
    "SynthOptions": "options",
    "SynthPatient": "options",
    "BOOST_FRACTIONS": "phantom",
    "BOOST_RX_GY": "phantom",
    "HU_AIR": "phantom",
    "HU_BONE": "phantom",
    "HU_LUNG": "phantom",
    "HU_SOFT_TISSUE": "phantom",
    "NOISE_HU": "phantom",
    "PRIMARY_FRACTIONS": "phantom",
    "PRIMARY_RX_GY": "phantom",
    "Ellipsoid": "phantom",
    "Phantom": "phantom",
    "make_phantom": "phantom",
    "REALISTIC": "realistic",
    "dose_grid": "rtdose",
}


def __getattr__(name: str):
    if name in _SOURCES:
        value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "REALISTIC",
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
