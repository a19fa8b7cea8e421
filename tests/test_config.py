"""Config resolution: defaults <- --config file <- flags, and refusal of unknown keys / bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fracturekit.core.errors import UserError
from fracturekit.training.config import default_config_path, parse_set_options, resolve_config


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_defaults_are_valid_and_xray_aware(task: str) -> None:
    cfg = resolve_config(task)
    # grayscale films: no hue/saturation jitter, no vertical flips
    assert (cfg["hsv_h"], cfg["hsv_s"], cfg["flipud"]) == (0.0, 0.0, 0.0)
    assert 0 < cfg["hsv_v"] <= 0.3 and 0 < cfg["degrees"] <= 10 and cfg["fliplr"] == 0.5
    assert cfg["device"] == "auto" and cfg["model"] == "n"
    assert cfg.overridden() == {}


def test_precedence_defaults_file_flags(tmp_path: Path) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text("epochs: 7\nlr0: 0.002\nimgsz: 96\n")
    cfg = resolve_config("classify", file, {"epochs": 3, "batch": None})
    assert (cfg["epochs"], cfg["lr0"], cfg["imgsz"], cfg["batch"]) == (3, 0.002, 96, 32)
    assert cfg.sources["epochs"] == "the command line"
    assert cfg.sources["lr0"] == str(file)
    assert cfg.sources["batch"] == str(default_config_path("classify"))  # None override ignored


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve_config("detect", None, {"epochs": 2, "mosaic": 0.0, "name": "x", "project": str(tmp_path)})
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml())
    assert "# epochs: from the command line" in saved.read_text()
    body = yaml.safe_load(saved.read_text())
    assert "name" not in body and "project" not in body  # run location lives in run.json
    again = resolve_config("detect", saved)
    assert {k: again[k] for k in body} == body


@pytest.mark.parametrize(
    ("task", "file_text", "overrides", "message"),
    [
        ("classify", None, {"epoch": 3}, r"unknown key 'epoch' \(did you mean 'epochs'\?\)"),  # typo, with hint
        ("detect", None, {"balance": True}, "unknown key 'balance'"),  # classify-only key refused for detect
        ("classify", "epochs: [1\n", {}, r"not valid YAML \(line 2\)"),  # broken YAML names the line
        ("classify", "- epochs\n", {}, "expected `key: value` lines"),  # a list, not a mapping
        ("classify", "data: x\n", {}, "'data' cannot be set here; it is set by --data"),  # reserved key
        ("classify", None, {"lr0": 5}, "lr0=5 is an invalid value; valid lr0 values are between 0.0 and 1.0"),
        ("classify", None, {"epochs": "ten"}, "epochs='ten'"),  # wrong type, Ultralytics' rule
        ("classify", None, {"epochs": 0}, "epochs=0"),  # below Ultralytics' minimum
        ("detect", None, {"mosaic": True}, "must be a number, not true/false"),  # YAML 'yes' is not 1.0
        ("classify", None, {"imgsz": 0}, "imgsz=0 must be a positive number of pixels"),  # no pixels to train on
        ("classify", None, {"imgsz": 64.0}, "imgsz=64.0 must be a positive number of pixels"),  # not an integer
        ("classify", None, {"model": "q"}, "must be n, s, m, l, x"),  # unknown model size
        ("classify", None, {"model": "missing.pt"}, "does not exist"),  # model checkpoint not found
        ("detect", None, {"weights": "nowhere/w.pt"}, "weights='nowhere/w.pt' names a file that does not exist"),
        ("detect", None, {"weights": "w.onnx"}, "must be the path of a .pt checkpoint"),  # wrong format
        ("classify", None, {"threads": 0}, "threads=0 must be an integer >= 1"),  # zero threads
        ("classify", None, {"aug_clahe": 1.5}, "must be a probability between 0 and 1"),  # bad probability
        ("classify", None, {"balance": "yes"}, "must be true or false"),  # a string is not a bool
        ("classify", None, {"name": "a/b"}, "must be a folder name without slashes"),  # path in a name
        ("classify", None, {"freeze": "all"}, "must be a number of leading layers"),  # bad freeze
        ("classify", None, {"freeze_epochs": 2}, "needs freeze"),  # phase length without frozen layers
        ("classify", None, {"freeze": 9, "freeze_epochs": 9, "epochs": 5}, "exceeds epochs=5"),  # phase 1 > run
        ("classify", None, {"device": ""}, "must be auto, cpu, mps"),  # empty device
        ("detect", None, {"optimizer": "Nope"}, "optimizer='Nope' must be one of auto, SGD"),  # was a traceback
        ("detect", None, {"optimizer": 1}, "optimizer=1 must be one of auto"),  # a number is no optimizer name
    ],
)
def test_invalid_configs(
    tmp_path: Path, task: str, file_text: str | None, overrides: dict[str, Any], message: str
) -> None:
    config = None
    if file_text is not None:
        config = tmp_path / "bad.yaml"
        config.write_text(file_text)
    with pytest.raises(UserError, match=message) as err:
        resolve_config(task, config, overrides)
    where = str(config) if config else "the command line"
    assert str(err.value).startswith(where)  # the message names the file or the flags
    assert str(err.value).count(". ") == 0  # one sentence


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        resolve_config("classify", tmp_path / "nope.yaml")


def test_unknown_task() -> None:
    with pytest.raises(UserError, match="--task classify or --task detect"):
        resolve_config("segment")


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["lr0=0.001"], {"lr0": 0.001}),  # float
        (["epochs=3", "amp=false"], {"epochs": 3, "amp": False}),  # int and bool
        (["freeze=[0, 1, 2]"], {"freeze": [0, 1, 2]}),  # YAML list
        (["weights="], {"weights": None}),  # empty value = null
        (["name=run a"], {"name": "run a"}),  # plain string
        ([], {}),  # nothing
    ],
)
def test_parse_set_options(items: list[str], expected: dict[str, Any]) -> None:
    assert parse_set_options(items) == expected


def test_parse_set_options_needs_equals() -> None:
    with pytest.raises(UserError, match="expected key=value"):
        parse_set_options(["lr0"])


def test_the_optimizer_names_are_the_ones_ultralytics_builds() -> None:
    """OPTIMIZERS holds what Ultralytics' trainer builds (in any case), and a name outside it is what it refuses."""
    import torch
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel

    from fracturekit.training.config import OPTIMIZERS

    trainer = BaseTrainer.__new__(BaseTrainer)  # build_optimizer reads self.args and, for auto, self.data["nc"]
    trainer.args, trainer.data = type("Args", (), {"lr0": 0.01})(), {"nc": 2}
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    for name in (*OPTIMIZERS, "adamw", "sgd"):
        assert isinstance(trainer.build_optimizer(model, name=name), torch.optim.Optimizer), name
        resolve_config("detect", None, {"optimizer": name})  # accepted here too
    with pytest.raises(NotImplementedError):
        trainer.build_optimizer(model, name="Nope")
