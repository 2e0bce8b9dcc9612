"""Dose: RTDOSE grids in Gy, plan prescriptions, and a course's total dose."""
