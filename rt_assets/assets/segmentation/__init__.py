"""GPU stage: segmentation assets in the pool ``gpu`` (one step at a time)."""
