"""Quality control of a course: checks and preview images."""
