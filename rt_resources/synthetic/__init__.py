"""Synthetic DICOM-RT course generator (CT, RTSTRUCT, RTPLAN, RTDOSE; MR + REG; PET) for tests and demos.

Public API::

    write_patient(out_dir, index, options=SynthOptions(), patient_id=None, patient_name=None)
    write_cohort(out_dir, n_patients, options=SynthOptions())

Analytic ground truth for tests (patient coordinates, mm): ``make_phantom(options,
course_number).hu(x, y, z)`` (HU, noise-free) and ``.dose_gy(x, y, z, prescription_gy,
target)`` (Gy); ``course_context(...)`` also gives the CT grid, ``dose_grid(ctx)`` the
RTDOSE grid. With ``SynthOptions(mr=True)`` each course also has an MR series in its own
frame of reference and a rigid REG; ``p_mr = R @ p_ct + t`` with ``mr_from_ct_matrix()``
(also ``SynthCourse.mr_from_ct``), ``t1_intensity(phantom, x, y, z)`` the noise-free MR
value at CT points, and ``mr_grid(ctx)`` the MR grid (MR patient coordinates). With
``SynthOptions(pet="siemens" | "ge" | "philips" | "cycle")`` each course also has an FDG PET
series in the CT's frame of reference (a PET/CT, no REG) with that vendor's SUV headers;
``pet_suv(phantom, x, y, z)`` is its noise-free SUVbw at CT points, ``pet_lesion(phantom)`` the
lesion sphere and ``pet_grid(ctx)`` the PET grid.
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
    "PET_VENDORS": "options",
    "SynthCourse": "options",
    "SynthFile": "options",
    "SynthOptions": "options",
    "SynthPatient": "options",
    "PET_BACKGROUND_SUV": "pet",
    "PET_BONE_SUV": "pet",
    "PET_HEART_SUV": "pet",
    "PET_LESION_MARGIN_MM": "pet",
    "PET_LESION_SUV": "pet",
    "PET_LUNG_SUV": "pet",
    "PET_UPTAKE_S": "pet",
    "pet_decayed_dose_bq": "pet",
    "pet_grid": "pet",
    "pet_lesion": "pet",
    "pet_suv": "pet",
    "pet_vendor": "pet",
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
    "PET_BACKGROUND_SUV",
    "PET_BONE_SUV",
    "PET_HEART_SUV",
    "PET_LESION_MARGIN_MM",
    "PET_LESION_SUV",
    "PET_LUNG_SUV",
    "PET_UPTAKE_S",
    "PET_VENDORS",
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
    "pet_decayed_dose_bq",
    "pet_grid",
    "pet_lesion",
    "pet_suv",
    "pet_vendor",
    "t1_intensity",
    "write_cohort",
    "write_patient",
]
