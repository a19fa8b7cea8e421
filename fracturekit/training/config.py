"""Training configuration: task defaults <- `--config FILE` <- CLI flags, validated with clear errors.

The defaults live in `configs/classify.yaml` and `configs/detect.yaml`; their keys plus every
Ultralytics train argument form the schema. Ultralytics' own type/range rules (`ultralytics.cfg.check_cfg`)
judge its keys, so a value Ultralytics would refuse after minutes of setup is refused up front, with
the file or flag that set it named in one sentence.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fracturekit import shipped_dir
from fracturekit.core.errors import UserError
from fracturekit.core.options import imgsz_problem

TASKS = ("classify", "detect")
MODEL_SIZES = ("n", "s", "m", "l", "x")

# Where the run goes, not how it trains: kept out of the saved config.yaml (run.json records them).
LOCATION_KEYS = ("project", "name", "resume")
# Ultralytics keys that fracturekit sets itself from --data / --task / the run folder / --model / --weights.
RESERVED_KEYS = {
    "task": "--task",
    "mode": "the command (train)",
    "data": "--data",
    "save_dir": "--project and --name",
    "cfg": "--config",
    "pretrained": "--weights",
    "source": "nothing (predict only)",
}


def check_known_task(task: str) -> None:
    """A UserError unless `task` is one fracturekit trains (TASKS); `options.check_task` checks a run's task instead."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; use --task classify or --task detect.")


def default_config_path(task: str) -> Path:
    """The YAML with the defaults of `task`."""
    check_known_task(task)
    path = shipped_dir("configs", "configs") / f"{task}.yaml"
    if not path.is_file():
        raise UserError(f"{path}: default config missing; reinstall fracturekit.")
    return path


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold one mapping of keys to values."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found; pass an existing YAML file to --config.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{p}: not valid YAML{where}; fix the syntax or start from configs/classify.yaml.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected `key: value` lines, got a {type(data).__name__}; write one key per line.")
    return {str(k): v for k, v in data.items()}


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """`["lr0=0.001", "mosaic=0"]` -> typed values (YAML scalars: numbers, true/false, null, lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set lr0=0.001.")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def training_overrides(set_options: list[str] | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config overrides from the command line (train and cv): the `--set key=value` pairs, then each flag
    that was given (None = not given, so a CLI default never masks the config file); a path as its text."""
    given = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    return {**parse_set_options(set_options), **given}


def _ultralytics_defaults() -> dict[str, Any]:
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return dict(DEFAULT_CFG_DICT)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_model(v: Any) -> str | None:
    if not isinstance(v, str) or not v:
        return "must be n, s, m, l, x or a model .yaml/.pt path"
    if v in MODEL_SIZES:
        return None
    suffix = Path(v).suffix.lower()
    if suffix == ".pt":
        return None if Path(v).is_file() else "names a .pt file that does not exist"
    if suffix in (".yaml", ".yml"):
        # a bare name like yolov8s-p2.yaml is one of Ultralytics' built-in model definitions
        return None if Path(v).is_file() or "/" not in v else "names a .yaml file that does not exist"
    return "must be n, s, m, l, x or a model .yaml/.pt path"


def _check_weights(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or Path(v).suffix.lower() != ".pt":
        return "must be the path of a .pt checkpoint"
    return None if Path(v).is_file() else "names a file that does not exist"


def _check_device(v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return None
    if isinstance(v, str) and v.strip():
        return None  # availability is checked by fracturekit.core.device at train time
    return "must be auto, cpu, mps, a GPU index (0) or a list (0,1)"


def _check_optional_int(minimum: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= minimum):
            return None
        return f"must be an integer >= {minimum} or null"

    return check


def _check_probability(v: Any) -> str | None:
    return None if _is_number(v) and 0.0 <= v <= 1.0 else "must be a probability between 0 and 1"


def _check_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _check_optional_bool(v: Any) -> str | None:
    return None if v is None or isinstance(v, bool) else "must be true, false or null"


def _check_name(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or "/" in v or "\\" in v or v in (".", ".."):
        return "must be a folder name without slashes"
    return None


def _check_project(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a folder path"


LOGGERS = ("none", "tensorboard", "mlflow")


def _check_logger(v: Any) -> str | None:
    return None if v in LOGGERS else f"must be one of {', '.join(LOGGERS)}"


# The names Ultralytics 8.4's `BaseTrainer.build_optimizer` accepts, case-insensitively; it keeps them in a local set
# and raises NotImplementedError (a traceback) only once the model and data are loaded. tests/test_config.py builds
# each with Ultralytics, so a name it drops fails that test.
OPTIMIZERS = ("auto", "SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop")


def _check_optimizer(v: Any) -> str | None:
    known = {o.lower() for o in OPTIMIZERS}
    return None if isinstance(v, str) and v.lower() in known else f"must be one of {', '.join(OPTIMIZERS)}"


def _check_freeze(v: Any) -> str | None:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return None
    if isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        return None
    return "must be a number of leading layers (9 for example), a list of layer indices, or null"


# fracturekit's own keys (and Ultralytics keys it checks more strictly); a task accepts those its YAML lists.
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "model": _check_model,
    "weights": _check_weights,
    "device": _check_device,
    "threads": _check_optional_int(1),
    "balance": _check_bool,
    "reproducible": _check_bool,
    "val_bf16": _check_optional_bool,
    "prefetch": _check_optional_bool,
    "freeze": _check_freeze,
    "freeze_epochs": _check_optional_int(1),
    "aug_clahe": _check_probability,
    "aug_brightness_contrast": _check_probability,
    "aug_gamma": _check_probability,
    "project": _check_project,
    "name": _check_name,
    "resume": _check_bool,
    "imgsz": imgsz_problem,  # the one imgsz rule: positive; train rounds it up to the stride
    "logger": _check_logger,
    "optimizer": _check_optimizer,
}


@dataclass
class TrainConfig:
    """The resolved settings of one run and, for each key, the file or flag that set it."""

    task: str
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def overridden(self) -> dict[str, str]:
        """Keys whose value does not come from the task defaults -> where it came from."""
        default = str(default_config_path(self.task))
        return {k: s for k, s in self.sources.items() if s != default}

    def to_yaml(self) -> str:
        """The settings as a YAML mapping usable as `--config` again, provenance as comments."""
        lines = [
            f"# fracturekit train --task {self.task}: final resolved config (defaults <- --config <- flags).",
            "# Reuse with `fracturekit train --config THIS_FILE`; project/name/resume are in run.json.",
        ]
        lines += [f"# {k}: from {s}" for k, s in sorted(self.overridden().items()) if k not in LOCATION_KEYS]
        body = {k: v for k, v in self.values.items() if k not in LOCATION_KEYS}
        return "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)


def _unknown_key(key: str, source: str, known: set[str], task: str) -> UserError:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(
        f"{source}: unknown key {key!r}{hint}; use a key of {default_config_path(task)} "
        "or an Ultralytics train argument."
    )


def resolve_config(
    task: str, config: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Merge defaults, the `--config` file and the overrides (CLI flags / keyword arguments); validate all."""
    default_path = default_config_path(task)
    defaults = load_mapping(default_path)
    ultra = _ultralytics_defaults()
    known = (set(defaults) | set(ultra)) - set(RESERVED_KEYS)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = [(str(default_path), defaults)]
    if config is not None:
        layers.append((str(config), load_mapping(config)))
    if overrides:
        # Path objects from Python callers become the strings a YAML file would hold
        given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items()}
        layers.append(("the command line", {k: v for k, v in given.items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            if key in RESERVED_KEYS:
                raise UserError(f"{source}: {key!r} cannot be set here; it is set by {RESERVED_KEYS[key]}.")
            if key not in known:
                raise _unknown_key(key, source, known, task)
            values[key] = value
            sources[key] = source
    cfg = TrainConfig(task=task, values=values, sources=sources)
    _validate(cfg, ultra)
    return cfg


def _validate(cfg: TrainConfig, ultra: dict[str, Any]) -> None:
    """Raise a UserError naming the first bad key, its value, where it was set and the accepted values."""
    from ultralytics.cfg import check_cfg

    for key, value in cfg.values.items():
        source = cfg.sources.get(key, "defaults")
        problem = _CHECKS[key](value) if key in _CHECKS else None
        default = ultra.get(key)
        if problem is None and isinstance(value, bool) and _is_number(default) and not isinstance(default, bool):
            problem = "must be a number, not true/false"  # Ultralytics would take true as 1
        if problem is None and key in ultra and key not in _CHECKS:
            try:
                check_cfg({key: value}, hard=True)
            except (TypeError, ValueError) as exc:
                # Ultralytics says "'k=v' is ... . Valid 'k' values are ..."; make it one clause of our sentence
                parts = str(exc).replace("'", "").removeprefix(f"{key}={value} ").rstrip(".").split(". ")
                problem = "; ".join(p[:1].lower() + p[1:] for p in parts)
        if problem:
            raise UserError(f"{source}: {key}={value!r} {problem}; fix that value.")
    freeze_epochs, epochs = cfg.values.get("freeze_epochs"), cfg.values.get("epochs")
    if freeze_epochs is not None and not cfg.values.get("freeze"):
        raise UserError(
            f"{cfg.sources['freeze_epochs']}: freeze_epochs={freeze_epochs} needs freeze (the layers to hold); "
            "add --freeze N or drop freeze_epochs."
        )
    if freeze_epochs is not None and isinstance(epochs, int) and freeze_epochs > epochs:
        raise UserError(
            f"{cfg.sources['freeze_epochs']}: freeze_epochs={freeze_epochs} exceeds epochs={epochs}; "
            "make phase 1 shorter than the whole run."
        )
