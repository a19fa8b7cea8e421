"""The base class every inference backend derives from, and the one map they register in.

A backend is a class: which weights it reads (and the export files of a run it owns), how it loads them,
how it runs a batch, how many films it runs at once, and where it ranks among a run's exports when no
speed was measured on this machine. Subclassing `Backend` with a `name` registers the class in
`BACKEND_MAP`; `fracturekit.infer.backends` imports every module of this package, so a new backend is
one new file here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from fracturekit.core.device import CpuInfo, Device
    from fracturekit.infer.model import Model

BACKEND_MAP: dict[str, type[Backend]] = {}  # Model.backend name -> class, filled as the modules are imported


@dataclass(frozen=True)
class Variant:
    """One export of a run that a backend reads: its `--backend` name and its file or folder under weights/."""

    name: str  # `fracturekit predict --backend NAME`, a key of EXPORTS
    file: str  # under the run's weights/, as `fracturekit export` names it
    int8: bool = False  # written by `fracturekit export --int8`


@dataclass
class Loaded:
    """What a backend's `load` found in a weights file: the runnable net and the model's own metadata."""

    net: Any
    task: str  # "detect" | "classify", as the weights record it
    names: dict[int, str]
    stride: int
    trained_imgsz: int | None  # the imgsz the weights record, if any
    shape: list[Any]  # input [batch, 3, h, w]: an int where fixed, None or a name where dynamic
    precision: str = "float32"  # what the arithmetic runs in: float32, int8, bf16, fp16
    device: str = "cpu"  # where it runs, as a torch device string


class Backend:
    """One way to run a model. Class methods only: the loaded state lives in `Model` (its `net`)."""

    name: ClassVar[str]  # Model.backend, recorded in predictions.json and export's check sidecar
    title: ClassVar[str]  # how a label names it, e.g. "ONNX Runtime"
    order: ClassVar[int]  # position in lists (CLI help, --backend choices) and among backends reading one file
    weights_help: ClassVar[str]  # how the CLI help names the weights it reads, e.g. ".onnx"
    batch_help: ClassVar[str]  # its default batch in words, for the CLI help of --batch
    variants: ClassVar[tuple[Variant, ...]] = ()  # the run's files it owns (a backend reading another's has none)
    export_format: ClassVar[str | None] = None  # the `fracturekit export --format` that writes its variants
    export_module: ClassVar[str | None] = None  # the module that export needs, None: torch alone
    optional: ClassVar[bool] = False  # export_module is an optional extra (`pip install NAME`), not a dependency
    cam: ClassVar[bool] = False  # gives EigenCAM heatmaps (needs the PyTorch graph)
    reference: ClassVar[bool] = False  # reads a run's own float32 checkpoint, which every export is made from

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            BACKEND_MAP[cls.name] = cls

    @classmethod
    def reads(cls, path: Path) -> bool:
        """This backend can load `path` (a weights file, or the folder an export is)."""
        raise NotImplementedError

    @classmethod
    def usable(cls, device: Device) -> bool:
        """This backend runs here for `device` (its runtime installed, its hardware present)."""
        return True

    @classmethod
    def load(cls, path: Path, threads: int, device: Device, torch_device: str) -> Loaded:
        """Load `path` with `threads` CPU threads for `device`; UserError when it is not a loadable model."""
        raise NotImplementedError

    @classmethod
    def prepare(cls, path: Path, threads: int) -> None:
        """After `fracturekit export` wrote `path`: ready it for `load` on this machine with `threads` threads.
        Nothing to do by default."""

    @classmethod
    def inputs(cls, model: Model, images: list[np.ndarray]) -> np.ndarray:
        """The batch `forward` takes for uint8 gray (H, W) images of one shape: float32 (B, 3, H, W) in 0..1."""
        from fracturekit.infer.preprocess import to_batch

        return to_batch(images)

    @classmethod
    def forward(cls, model: Model, x: np.ndarray) -> np.ndarray:
        """Run a batch made by `inputs`; return the raw head output as numpy."""
        raise NotImplementedError

    @classmethod
    def parallel(cls, model: Model) -> int:
        """Films one forward call runs at once without slowing each."""
        return 1

    @classmethod
    def calls(cls, model: Model, batch: int) -> int:
        """Forward calls of `batch` films `scoring.stream` makes at once, each from its own thread; above 1,
        `forward` must be safe from several threads at once."""
        return 1

    @classmethod
    def default_batch(cls, model: Model) -> int:
        """Films per forward call when --batch is not given."""
        return cls.parallel(model)

    @classmethod
    def rank(cls, variant: Variant, cpu: CpuInfo) -> int | None:
        """Where `variant` ranks among a run's exports when its speed was measured on another machine (lower =
        preferred; one scale shared by all backends), or None: never chosen unmeasured."""
        return None

    @classmethod
    def label(cls, model: Model) -> str:
        """E.g. 'OpenVINO int8 (best_int8_openvino_model)': which backend, precision and weights."""
        return f"{cls.title} {model.precision} ({model.weights.name})"


def chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    """`x` in consecutive slices of `size` along the batch axis (the last one may be shorter)."""
    return [x[i : i + size] for i in range(0, len(x), size)]


def padded(chunk: np.ndarray, size: int) -> np.ndarray:
    """`chunk` zero-padded along the batch axis to the `size` a static-shape model requires."""
    if len(chunk) == size:
        return chunk
    return np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])


def imgsz_value(v: Any) -> int | None:
    """An imgsz as weights record it (an int, or [h, w]) as one int: the larger side."""
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and v:
        return int(max(v))
    return None
