"""fracturekit: bone-fracture X-ray AI from messy datasets to verified numbers and annotated predictions."""

__version__ = "0.1.0"
