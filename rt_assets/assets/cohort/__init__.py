"""Cohort tables over all courses (unpartitioned)."""
