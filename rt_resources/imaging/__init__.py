"""Image volumes: CT series (and later dose grids and masks) with explicit geometry."""
