"""Structure names: clinical ROI names mapped to AAPM TG-263 standard names (:mod:`.tg263`)."""
