"""Stable pseudonymous course keys.

A course key is ``c-`` followed by 12 hex digits of HMAC-SHA256(site secret,
PatientID + CT StudyInstanceUID). The same course always gets the same key at one
site; without the secret the key reveals nothing about the patient. The mapping
key -> patient lives only in the data root (``cohort/courses.parquet``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_ENV = "RT_SITE_SECRET"
SECRET_FILE = ".site_secret"


def course_key(patient_id: str, ct_study_uid: str, secret: bytes) -> str:
    """Pseudonymous key of the course planned on ``ct_study_uid`` for ``patient_id``."""
    message = f"{patient_id}\x00{ct_study_uid}".encode()
    return "c-" + hmac.new(secret, message, hashlib.sha256).hexdigest()[:12]


def load_site_secret(data_root: Path) -> bytes:
    """The site secret: ``$RT_SITE_SECRET``, else ``<data_root>/.site_secret`` (created once)."""
    from_env = os.environ.get(SECRET_ENV, "")
    if from_env:
        return from_env.encode()
    path = Path(data_root) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(f".{os.getpid()}.tmp"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:  # first writer wins; a concurrent creator keeps the existing secret
            os.link(path.with_suffix(f".{os.getpid()}.tmp"), path)
        except FileExistsError:
            pass
        finally:
            os.unlink(path.with_suffix(f".{os.getpid()}.tmp"))
    return path.read_text().strip().encode()
