"""Structures: RTSTRUCT ROIs as contours, and as masks on an image grid."""
