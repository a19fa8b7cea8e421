"""A wheel (what `pip install git+URL` builds) carries the YAML defaults and the dataset presets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _source_copy(target: Path) -> Path:
    """The files a build reads, copied: building in the checkout would reuse (and write) its build/ folder."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "fracturekit", target / "fracturekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", target / "configs")
    (target / "datasets").mkdir()
    for preset in (REPO / "datasets").glob("*.yaml"):
        shutil.copy2(preset, target / "datasets" / preset.name)
    return target


def test_wheel_carries_configs_and_presets(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    build += ["--disable-pip-version-check", "-q", "-w", str(tmp_path)]  # no network: everything is local
    subprocess.run([*build, str(_source_copy(tmp_path / "src"))], check=True, capture_output=True)
    wheel = next(tmp_path.glob("fracturekit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in ("classify", "detect"):
        assert f"fracturekit/configs/{task}.yaml" in names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fracturekit").rglob("*.py")}
    assert modules <= names, modules - names  # pyproject lists the subpackages by hand: none forgotten
    assert {f"fracturekit/review/static/{n}" for n in ("index.html", "review.js", "review.css")} <= names
    presets = {p.name for p in (REPO / "datasets").glob("*.yaml")}
    assert presets and {f"fracturekit/preset_files/{n}" for n in presets} <= names

    # the unpacked wheel, imported ahead of this checkout, finds them inside itself
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from fracturekit.training.config import default_config_path; from fracturekit.data.presets import load_preset;"
        "print(default_config_path('detect')); print(load_preset('fracatlas').path)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert Path(line).is_relative_to(site), line
