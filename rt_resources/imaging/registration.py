"""Rigid DICOM Spatial Registration (REG) objects: read, check and compose their matrices.

DICOM PS3.3 C.20.2.1: a Spatial Registration instance has a frame of reference of its own
(the top-level FrameOfReferenceUID, the "registered" frame). Each RegistrationSequence item
names a source frame of reference and a 4x4 FrameOfReferenceTransformationMatrix (16 values,
row-major, homogeneous) that maps points **from that item's frame into the REG's frame**::

    p_reg = M[for_uid] @ p_for          (column vectors [x, y, z, 1], mm)

so points move between two frames A and B listed in one REG with
``inv(M[B]) @ M[A]`` (:func:`transform_between`). The REG's own frame maps to itself with
the identity whether or not it has an item of its own.

Only what can be trusted is accepted: a REG is refused (``ValueError`` naming the file and
what is wrong) when it is a Deformable Spatial Registration, when a matrix is not 16 numbers,
not RIGID, not a proper rigid transform (orthonormal rotation, last row 0 0 0 1) or singular,
when an item has more than one matrix (composition order is not something we guess), or when
two items give different matrices for one frame of reference.

SimpleITK note: ``sitk.Resample(image, reference, transform)`` evaluates, for every voxel of
the *reference* (output) grid, the *input* image at ``transform(point)``: the transform maps
output points to input points. To resample an image living in frame A onto a grid in frame B,
pass ``sitk_transform(transform_between(reg, B, A))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from rt_resources.dicom.sop_classes import DEFORMABLE_REGISTRATION, SPATIAL_REGISTRATION

#: tolerance on R.T @ R == I and det(R) == 1 of a RIGID matrix (exports print ~7-16 digits)
RIGID_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Registration:
    """The rigid matrices of one REG file."""

    path: Path
    sop_instance_uid: str
    reg_for_uid: str  #: the REG's own (registered) frame of reference
    #: frame of reference UID -> 4x4 matrix mapping that frame's points into ``reg_for_uid``
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def matrix(self, for_uid: str) -> np.ndarray:
        """4x4 matrix mapping ``for_uid`` into the REG frame; ValueError when the REG lacks it."""
        if for_uid == self.reg_for_uid and for_uid not in self.matrices:
            return np.eye(4)
        try:
            return self.matrices[for_uid]
        except KeyError:
            known = ", ".join(sorted({self.reg_for_uid, *self.matrices})) or "none"
            raise ValueError(
                f"{self.path}: REG {self.sop_instance_uid} does not register frame of reference {for_uid} "
                f"(it has {known})"
            ) from None


def _check_matrix(values, path: Path, for_uid: str) -> np.ndarray:
    where = f"{path}: RegistrationSequence item for frame of reference {for_uid}"
    try:
        flat = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: FrameOfReferenceTransformationMatrix is not numeric ({values!r})") from exc
    if flat.shape != (16,):
        raise ValueError(f"{where}: FrameOfReferenceTransformationMatrix has {flat.size} values, a 4x4 matrix needs 16")
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"{where}: FrameOfReferenceTransformationMatrix has non-finite values {flat.tolist()}")
    m = flat.reshape(4, 4)
    if np.max(np.abs(m[3] - [0.0, 0.0, 0.0, 1.0])) > 1e-9:
        raise ValueError(f"{where}: last matrix row is {m[3].tolist()}, not [0, 0, 0, 1] (not an affine transform)")
    rotation = m[:3, :3]
    det = float(np.linalg.det(rotation))
    if abs(det) < 1e-6:
        raise ValueError(f"{where}: matrix is singular (determinant {det:.3g}) and cannot be inverted")
    off = float(np.max(np.abs(rotation.T @ rotation - np.eye(3))))
    if off > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        raise ValueError(
            f"{where}: matrix type is RIGID but its 3x3 part is not a rotation "
            f"(determinant {det:.6g}, R.T @ R deviates from I by {off:.3g})"
        )
    return m


def read_registration(path: str | Path) -> Registration:
    """Read a rigid Spatial Registration file; ValueError (naming the file) for anything else."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise ValueError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == DEFORMABLE_REGISTRATION or "DeformableRegistrationSequence" in ds:
        raise ValueError(f"{path}: deformable spatial registration (DeformableRegistrationSequence) is not supported")
    if sop_class != SPATIAL_REGISTRATION:
        raise ValueError(f"{path}: SOP Class {sop_class or 'missing'} is not Spatial Registration Storage")
    reg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    if not reg_for:
        raise ValueError(f"{path}: REG has no top-level FrameOfReferenceUID (0020,0052)")
    items = ds.get("RegistrationSequence") or []
    if not items:
        raise ValueError(f"{path}: REG has no RegistrationSequence (0070,0308)")

    matrices: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for index, reg_item in enumerate(items, start=1):
        for_uid = str(reg_item.get("FrameOfReferenceUID", "") or "")
        if not for_uid:
            notes.append(f"RegistrationSequence item {index} has no FrameOfReferenceUID; ignored")
            continue
        matrix_items = reg_item.get("MatrixRegistrationSequence") or []
        if len(matrix_items) != 1:
            raise ValueError(
                f"{path}: RegistrationSequence item for frame of reference {for_uid} has "
                f"{len(matrix_items)} MatrixRegistrationSequence items, expected exactly 1"
            )
        matrix_seq = matrix_items[0].get("MatrixSequence") or []
        if len(matrix_seq) != 1:
            raise ValueError(
                f"{path}: RegistrationSequence item for frame of reference {for_uid} has {len(matrix_seq)} "
                "MatrixSequence items; only a single matrix is supported"
            )
        matrix_item = matrix_seq[0]
        kind = str(matrix_item.get("FrameOfReferenceTransformationMatrixType", "") or "")
        if kind != "RIGID":
            raise ValueError(
                f"{path}: matrix for frame of reference {for_uid} has FrameOfReferenceTransformationMatrixType "
                f"{kind or 'missing'}; only RIGID registrations are supported"
            )
        values = matrix_item.get("FrameOfReferenceTransformationMatrix")
        if values is None:
            raise ValueError(
                f"{path}: matrix for frame of reference {for_uid} has no FrameOfReferenceTransformationMatrix"
            )
        if isinstance(values, str | bytes | float | int) or not hasattr(values, "__iter__"):
            values = [values]
        m = _check_matrix(values, path, for_uid)
        if for_uid in matrices and np.max(np.abs(matrices[for_uid] - m)) > 1e-6:
            raise ValueError(f"{path}: two RegistrationSequence items give different matrices for {for_uid}")
        matrices[for_uid] = m
    if reg_for in matrices and np.max(np.abs(matrices[reg_for] - np.eye(4))) > 1e-6:
        notes.append(f"the REG's own frame of reference {reg_for} has a non-identity matrix; used as given")
    return Registration(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        reg_for_uid=reg_for,
        matrices=matrices,
        notes=notes,
    )


def transform_between(reg: Registration, from_for: str, to_for: str) -> np.ndarray:
    """4x4 matrix mapping points in frame ``from_for`` to frame ``to_for``: ``inv(M_to) @ M_from``."""
    return np.linalg.inv(reg.matrix(to_for)) @ reg.matrix(from_for)


def sitk_transform(matrix_4x4: np.ndarray):
    """A ``SimpleITK.AffineTransform`` that maps points exactly as ``matrix_4x4`` does.

    For ``sitk.Resample(image, reference, transform)`` the matrix must map reference
    (output) points to ``image`` (input) points.
    """
    import SimpleITK as sitk

    m = np.asarray(matrix_4x4, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {m.shape}")
    if np.max(np.abs(m[3] - [0.0, 0.0, 0.0, 1.0])) > 1e-9:
        raise ValueError(f"last matrix row is {m[3].tolist()}, not [0, 0, 0, 1]")
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in m[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in m[:3, 3]])
    transform.SetCenter((0.0, 0.0, 0.0))
    return transform
