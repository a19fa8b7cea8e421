"""OpenVINO on CPU: a run's `best_openvino_model/` and its NNCF int8 `best_int8_openvino_model/`.

bf16 on CPUs with BF16 (OpenVINO's own default, which export's accuracy check measures), float32 elsewhere;
an NNCF export runs its int8 layers as int8. The graph is given a uint8 gray input (`gray_input`): the host
hands over the letterboxed pixels as they are. `fracturekit export` also compiles the export for this machine and
keeps the compiled model beside the export folder (`OpenVino.prepare`), which predict then loads instead of compiling
again (`compiled_blob`). One infer request per CPU stream, each film (each static
batch) on its own request, the requests running at once. The requests are a pool that several threads
draw from: `scoring.stream` runs one film per stream at once from its own thread (`calls`), so a stream
starts its next film while the others' films are post-processed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from fracturekit.core.errors import UserError
from fracturekit.infer.backends.base import Backend, Loaded, Variant, chunks, imgsz_value, padded

if TYPE_CHECKING:
    from fracturekit.core.device import CpuInfo, Device
    from fracturekit.infer.model import Model


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below AVX-512: under them OpenVINO 2026.4 still picks bf16 from CPUID on a
# BF16 CPU and then fails to compile ("object is not initialized"), so float32 is asked for (see `precision_hint`).
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
# Beside the export folder, named after it (like its `.check.json`): the export compiled for this machine by
# `OpenVino.prepare`. Not inside it: the folder's hash names the model in DICOM SRs (`dicom_out.weights_sha256`),
# and a compiled blob differs from one CPU to the next.
COMPILED = ".compiled"
GRAPH = "gray-u8-1"  # what `gray_input` makes of the export; a new edit needs a new name (old blobs then unused)
log = logging.getLogger(__name__)


def precision_hint() -> dict[str, str]:
    """{"INFERENCE_PRECISION_HINT": "f32"} when oneDNN is limited below AVX-512 (what an AVX2 CPU runs), else {}.

    OpenVINO's CPU plugin honours ONEDNN_MAX_CPU_ISA (its convolutions run as brgconv_avx2_f32 under AVX2, the
    runtime model's primitiveType says so; bench/predict_bench.py --isa avx2 prints it), but not in its choice
    of bf16.
    """
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    return {"INFERENCE_PRECISION_HINT": "f32"} if isa in _BELOW_AVX512 else {}


def config(threads: int) -> dict[str, Any]:
    """How the export is compiled: `threads` CPU threads split into streams (THROUGHPUT), `precision_hint`."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT", **precision_hint()}


def compiled_blob(core: Any, xml: Path, settings: dict[str, Any]) -> Path:
    """Where `OpenVino.prepare` keeps the export compiled with `settings`: a file in `compiled_folder` named by a
    hash of all a compiled model depends on (the IR files, GRAPH, `settings`, OpenVINO's version, the CPU and its
    oneDNN ISA limit), so a blob compiled for other weights, options, runtime or CPU is never loaded.

    Why: compiling the int8 YOLOv8n-det took 0.46 CPU s (one thread, nothing else running yet: about a tenth of
    a 200-film predict), importing the compiled model 0.13 CPU s.
    """
    import openvino as ov

    h = hashlib.sha256(xml.read_bytes())
    h.update(xml.with_suffix(".bin").read_bytes())
    isa = [os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")]
    device = core.get_property("CPU", "FULL_DEVICE_NAME")
    h.update(json.dumps([GRAPH, ov.get_version(), device, isa, sorted(settings.items())]).encode())
    return compiled_folder(xml.parent) / f"{h.hexdigest()[:20]}.blob"


def compiled_folder(export: Path) -> Path:
    """The folder beside `export` that `OpenVino.prepare` keeps its compiled model in (COMPILED)."""
    return export.with_name(export.name + COMPILED)


def gray_input(model: Any) -> Any:
    """`model` (an ov.Model whose input is float32 (B, 3, H, W) in 0..1) with a uint8 (B, 1, H, W) gray input in its
    place: the cast, the 1/255 scale and the copy into 3 channels run inside the graph, as `to_batch` does them on
    the host (same float32 arithmetic: the outputs are equal, tests/test_openvino_load.py).

    Why: the host then builds no float32 3-channel batch, 12x the gray film's bytes (3.9 MB at 640x512) written
    per film and read back by the first convolution; in OpenVINO the three steps cost about 0.3 ms CPU a film.
    """
    import openvino as ov
    import openvino.opset13 as ops

    (old,) = model.get_parameters()
    shape = old.get_partial_shape()
    gray = ops.parameter(ov.PartialShape([shape[0], 1, shape[2], shape[3]]), ov.Type.u8, name=old.get_friendly_name())
    x = ops.multiply(ops.convert(gray, ov.Type.f32), ops.constant(np.float32(1.0 / 255.0)))
    x = ops.concat([x, x, x], 1)
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(x.output(0))
    return ov.Model(model.get_results(), [gray], model.get_friendly_name())


def _compile(core: Any, xml: Path, settings: dict[str, Any]) -> Any:
    """The export at `xml`, with its uint8 gray input (`gray_input`), compiled for this CPU with `settings`."""
    return core.compile_model(gray_input(core.read_model(str(xml))), "CPU", settings)


def _imported(core: Any, blob: Path, settings: dict[str, Any]) -> Any:
    """The compiled model export kept in `blob`, or None: none kept, or one this OpenVINO cannot read (compiled
    again then, with a warning)."""
    if not blob.is_file():
        return None
    try:
        return core.import_model(blob.read_bytes(), "CPU", settings)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for a blob it cannot read
        log.warning("%s: not loadable (%s); compiling the export instead", blob, exc)
        return None


class Requests:
    """A model's infer requests (one per stream), lent to the threads that run forward calls at once."""

    def __init__(self, requests: list) -> None:
        self.size = len(requests)
        self._free = list(requests)
        self._changed = threading.Condition()

    @contextmanager
    def take(self, k: int) -> Iterator[list]:
        """min(k, size) requests, all at once (a caller never holds some while waiting for more: no deadlock)."""
        k = min(k, self.size)
        with self._changed:
            self._changed.wait_for(lambda: len(self._free) >= k)
            got = [self._free.pop() for _ in range(k)]
        try:
            yield got
        finally:
            with self._changed:
                self._free.extend(got)
                self._changed.notify_all()


class OpenVino(Backend):
    name = "openvino"
    title = "OpenVINO"
    order = 30
    weights_help = "OpenVINO folder"
    batch_help = "1 with OpenVINO (a film per stream at once)"
    variants = (
        Variant("openvino", "best_openvino_model"),
        Variant("openvino-int8", "best_int8_openvino_model", int8=True),
    )
    export_format = "openvino"
    export_module = "openvino"
    optional = True

    @classmethod
    def reads(cls, path: Path) -> bool:
        """An Ultralytics OpenVINO export: a `*_openvino_model` folder holding the .xml and metadata.yaml."""
        return path.is_dir() and (path / "metadata.yaml").is_file() and any(path.glob("*.xml"))

    @classmethod
    def load(cls, path: Path, threads: int, device: Device, torch_device: str) -> Loaded:
        """Compile the export for this CPU with `threads` threads.

        THROUGHPUT hint: OpenVINO splits `threads` into streams (2 single-thread streams on 2 cores) and we
        keep one infer request per stream (`forward` says why), in a `Requests` pool.
        """
        try:
            import openvino as ov
        except ImportError as exc:
            raise UserError(
                f"{path}: an OpenVINO model, but openvino is not installed; pip install 'fracturekit[openvino]'."
            ) from exc
        meta = yaml.safe_load((path / "metadata.yaml").read_text()) or {}
        if "task" not in meta or "names" not in meta:
            raise UserError(
                f"{path}/metadata.yaml: no task/names; re-export with `fracturekit export --format openvino`."
            )
        xml = next(path.glob("*.xml"))
        try:
            core, settings = ov.Core(), config(threads)
            compiled = _imported(core, compiled_blob(core, xml, settings), settings) or _compile(core, xml, settings)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad IR files
            raise UserError(
                f"{xml}: not a loadable OpenVINO model ({exc}); re-export with `fracturekit export`."
            ) from exc
        ps = compiled.input(0).get_partial_shape()
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16 or f16
        n = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return Loaded(
            net=Requests([compiled.create_infer_request() for _ in range(n)]),
            task=meta["task"],
            names=meta["names"],
            stride=int(meta.get("stride", 32)),
            trained_imgsz=imgsz_value(meta.get("imgsz")),
            shape=[d.get_length() if d.is_static else None for d in ps],
            precision="int8" if "_int8_" in path.name else {"bf16": "bf16", "f16": "fp16"}.get(hint, "float32"),
        )

    @classmethod
    def prepare(cls, path: Path, threads: int) -> None:
        """Compile the export for this machine as `load` does and keep it beside (`compiled_blob`), replacing
        what an earlier export kept there."""
        import openvino as ov

        xml = next(path.glob("*.xml"))
        core, settings = ov.Core(), config(threads)
        blob = compiled_blob(core, xml, settings)
        blob.parent.mkdir(exist_ok=True)
        for old in blob.parent.glob("*.blob"):
            old.unlink()
        compiled = _compile(core, xml, settings)
        blob.write_bytes(compiled.export_model().getvalue())

    @classmethod
    def inputs(cls, model: Model, images: list[np.ndarray]) -> np.ndarray:
        """The uint8 gray images as they are, (B, 1, H, W): `gray_input` scales them inside the graph."""
        return np.stack(images)[:, None]

    @classmethod
    def forward(cls, model: Model, x: np.ndarray) -> np.ndarray:
        """Each film (each static batch) on its own infer request, one request per stream running at once.

        Why not one request over the batch: with OpenVINO's THROUGHPUT hint two single-thread streams ran
        an int8 YOLOv8n-det at 640x512 at 63.4 img/s on 2 cores, one two-thread LATENCY request at 44.2
        (bench/predict_bench.py's model, same run). Films are independent, so the numbers do not depend on
        how they are batched. Safe from several threads at once: each call takes the requests it runs on from
        the pool. Inputs are shared, not copied (`x` outlives the requests' runs); outputs are copied: a request
        reuses its buffer.
        """
        fb = model.fixed_batch or 1
        parts = chunks(x, fb)
        outs: list[np.ndarray] = []
        with model.net.take(len(parts)) as requests:
            for k in range(0, len(parts), len(requests)):
                running = list(zip(requests, parts[k : k + len(requests)], strict=False))  # the last may be short
                for req, chunk in running:
                    req.start_async({0: padded(chunk, fb)}, share_inputs=True)
                for req, chunk in running:
                    req.wait()
                    outs.append(req.get_output_tensor(0).data[: len(chunk)].copy())
        return np.concatenate(outs)

    @classmethod
    def parallel(cls, model: Model) -> int:
        """One (static) batch per stream."""
        return model.net.size * (model.fixed_batch or 1)

    @classmethod
    def calls(cls, model: Model, batch: int) -> int:
        """A call per stream when a call's batch fills one stream (a larger batch is spread over the streams)."""
        return max(1, cls.parallel(model) // batch)

    @classmethod
    def default_batch(cls, model: Model) -> int:
        """One film (one static batch) per call, `parallel` calls at once (`scoring.stream`): a stream never waits
        for another stream's film, nor for the post-processing of its own last one."""
        return model.fixed_batch or 1

    @classmethod
    def rank(cls, variant: Variant, cpu: CpuInfo) -> int | None:
        """From bench/ figures: on a VNNI/BF16 CPU OpenVINO int8 ran 3x and bf16 2x onnxruntime float32, so
        first (0, 1). Held to AVX2 (`bench/predict_bench.py --isa avx2`, two idle runs) int8 ran 25.69 and 22.51
        img/s against 17.28 and 18.02 for ONNX float32 (which even kept AVX-512), and an int8 export's check under
        AVX2 kernels kept its AUROC (0.694 vs 0.694 float32, 613 FracAtlas films): int8 first there too (0),
        float32 after ONNX float32 (2: 16.19 img/s)."""
        if cpu.vnni and cpu.bf16:
            return 0 if variant.int8 else 1
        return 0 if variant.int8 else 2
