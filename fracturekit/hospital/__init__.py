"""A hospital's systems: a DICOMweb PACS as a source, DICOM SR and Secondary Capture out."""
