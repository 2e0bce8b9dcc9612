"""Per-course assets (partitioned by course key)."""
