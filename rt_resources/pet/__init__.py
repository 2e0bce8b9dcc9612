"""PET quantification: SUV scale factors from DICOM headers, and SUV metrics of a region."""
