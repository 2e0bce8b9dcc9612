"""Agreement between a manual and an automatic contour of the same organ (Dice, surface distances)."""
