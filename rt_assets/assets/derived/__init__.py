"""CPU work on segmentation results: anatomical crops and custom structures."""
