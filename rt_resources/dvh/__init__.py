"""Dose-volume histograms: one metric code for contour-based and mask-based DVHs."""
