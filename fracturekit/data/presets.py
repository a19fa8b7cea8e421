"""Known public fracture datasets: one small YAML each under the repository's `datasets/` folder.

`fracturekit prepare --preset NAME` reads one to know the format, the label mapping, the grouping key
and the metadata CSV of a dataset the user downloaded. A wheel carries the YAMLs as
`fracturekit/preset_files/` (see pyproject.toml); a source checkout or editable install reads them from
the repository's `datasets/` folder.

Fields (all strings unless said): name (= file stem), title, url (where a user gets it), license,
citation, format (auto|folders|coco|voc|yolo|fracatlas), layout (short text), mapping ({name: class}
label synonyms passed to the readers), group ({group_regex: REGEX} matched on the image path relative
to the dataset root, first group or whole match is the key; or {group_column: COLUMN} of `meta_csv`),
meta_csv (path relative to the dataset root, optional), meta_key (the CSV column naming the image:
file name or stem), notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fracturekit import shipped_dir
from fracturekit.core.errors import UserError
from fracturekit.ingest.source import FORMATS as SOURCE_FORMATS

PRESETS_DIR = shipped_dir("preset_files", "datasets")
FORMATS = ("auto", *SOURCE_FORMATS)
_REQUIRED = ("name", "url", "license", "citation", "format", "layout")
_OPTIONAL = ("title", "mapping", "group", "meta_csv", "meta_key", "notes")
_GROUP_KEYS = ("group_regex", "group_column")


@dataclass(frozen=True)
class Preset:
    """One known dataset (see the module docstring for the fields)."""

    name: str
    url: str
    license: str
    citation: str
    format: str
    layout: str
    title: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    group_regex: str | None = None
    group_column: str | None = None
    meta_csv: str | None = None
    meta_key: str | None = None
    notes: str = ""
    path: Path | None = None


def list_presets(folder: Path | None = None) -> list[str]:
    """Names of the preset YAMLs, sorted."""
    folder = folder or PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _text(data: dict, key: str, path: Path, required: bool) -> str:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise UserError(f"{path}: missing field {key!r}")
        return ""
    if not isinstance(value, (str, int, float)):
        raise UserError(f"{path}: field {key!r} must be text")
    return str(value).strip()


def load_preset(name: str, folder: Path | None = None) -> Preset:
    """The preset called `name` (file `datasets/<name>.yaml`), validated; UserError listing the known ones."""
    folder = folder or PRESETS_DIR
    known = list_presets(folder)
    if name not in known:
        raise UserError(
            f"unknown preset {name!r}; known presets: {', '.join(known) or '(none found in ' + str(folder) + ')'}"
        )
    path = folder / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of fields")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise UserError(f"{path}: unknown fields {unknown}; allowed: {list(_REQUIRED + _OPTIONAL)}")
    fields = {k: _text(data, k, path, required=True) for k in _REQUIRED}
    if fields["name"] != name:
        raise UserError(f"{path}: name {fields['name']!r} differs from the file name {name!r}")
    if fields["format"] not in FORMATS:
        raise UserError(f"{path}: format {fields['format']!r} is not one of {'|'.join(FORMATS)}")
    mapping = data.get("mapping") or {}
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, int)) for v in mapping.values()):
        raise UserError(f"{path}: mapping must be {{name: class}}")
    group = data.get("group") or {}
    if not isinstance(group, dict) or set(group) - set(_GROUP_KEYS) or len(group) > 1:
        raise UserError(f"{path}: group must be empty or one of {{group_regex: ...}} / {{group_column: ...}}")
    regex = group.get("group_regex")
    if regex is not None:
        try:
            re.compile(str(regex))
        except re.error as exc:
            raise UserError(f"{path}: group_regex {regex!r} is not a valid regular expression ({exc})") from exc
    meta_csv = _text(data, "meta_csv", path, required=False) or None
    if group.get("group_column") and not meta_csv:
        raise UserError(f"{path}: group_column needs meta_csv")
    return Preset(
        **fields,
        title=_text(data, "title", path, required=False),
        mapping={str(k): str(v) for k, v in mapping.items()},
        group_regex=str(regex) if regex is not None else None,
        group_column=str(group["group_column"]) if group.get("group_column") else None,
        meta_csv=meta_csv,
        meta_key=_text(data, "meta_key", path, required=False) or None,
        notes=_text(data, "notes", path, required=False),
        path=path,
    )
