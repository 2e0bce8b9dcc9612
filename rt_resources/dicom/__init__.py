"""DICOM-level helpers: SOP classes and header-only reads."""
