"""Engines of the radiotherapy pipeline: DICOM indexing and linking, images, dose, features.

Pure Python; nothing here imports Dagster asset code. Heavy libraries (torch,
totalsegmentator, radiomics) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
