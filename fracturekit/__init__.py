"""fracturekit: bone-fracture X-ray AI from messy datasets to verified numbers and annotated predictions."""

from pathlib import Path

__version__ = "0.1.0"


def shipped_dir(packaged: str, checkout: str) -> Path:
    """A folder of YAMLs that ships with fracturekit: the wheel's `fracturekit/<packaged>/` (pyproject
    maps it there), else `<checkout>/` at the top of a source checkout or editable install."""
    here = Path(__file__).resolve().parent
    return here / packaged if (here / packaged).is_dir() else here.parent / checkout
