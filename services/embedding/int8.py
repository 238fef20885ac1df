"""The CPU int8 path of the encoder: the model's transformer exported to ONNX and quantized
dynamically (int8 weights per channel, int8 activations computed per batch), run by ONNX Runtime.

Only the transformer runs in ONNX Runtime; tokenisation, pooling and normalisation stay the
sentence-transformers modules of the loaded model, so the vectors are the model's own up to the
quantization error (mean cosine 0.994 to fp32 on Banking77; the accuracy it costs is measured by
`bench/quality.py --backends`, figures in docs/benchmarks.md).

Why not sentence-transformers' own `backend="onnx"` and `export_dynamic_quantized_onnx_model`: they
need optimum-onnx, whose only release (0.1.0) requires transformers<4.58, and sentence-transformers
6.2 requires transformers>=5. So the export (torch.onnx) and the quantization (onnxruntime) are
done here, in the two calls those helpers would make.

The quantized file is made once per model (about 4 s for all-MiniLM-L6-v2) and cached under
SIFT_ONNX_DIR (default SIFT_DATA_DIR/cache/onnx), keyed by the model directory's path and its
files' sizes and times, so a fine-tuned encoder gets its own. Several processes may make it at
once: each writes a temporary file and renames it into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "model_qint8.onnx"
OUTPUT = "token_embeddings"


def cache_key(path: str) -> str:
    """A key that changes when the model directory's files change (or it moves)."""
    p = Path(path).resolve()
    digest = hashlib.sha256(str(p).encode())
    for item in sorted(p.rglob("*")) if p.is_dir() else ():
        if item.is_file():
            stat = item.stat()
            digest.update(f"{item.relative_to(p)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def input_names(model: Any) -> list[str]:
    """The tokenizer outputs the transformer takes (input_ids, attention_mask, token_type_ids)."""
    sample = model.preprocess(["sift"])
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]


def quantized_file(model: Any, path: str, cache_dir: Path) -> Path:
    """The int8 ONNX file of model's transformer, made now if the cache has none."""
    target = cache_dir / cache_key(path) / FILE_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / FILE_NAME
        _export(model, fp32)
        _quantize(fp32, int8)
        os.replace(int8, target)
    log.info("int8 ONNX model for %s written to %s", path, target)
    return target


def _export(model: Any, out: Path) -> None:
    import torch

    names = input_names(model)
    transformer = model[0].auto_model

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = self.transformer(**dict(zip(names, inputs, strict=True))).last_hidden_state
            return output

    sample = model.preprocess(["an example sentence to trace", "and another one"])
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, OUTPUT]}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python control flow in the model
        torch.onnx.export(
            LastHiddenState().eval(),
            tuple(sample[name].cpu() for name in names),
            str(out),
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize(fp32: Path, int8: Path) -> None:
    """Dynamic quantization of the matrix products with constant weights, per output channel
    (per-tensor scales cost 3 points of cosine on this model: 0.969 against 0.994)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_quantizer_lines)  # it logs a line per tensor on the root logger: nothing to act on
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        root.removeFilter(_quantizer_lines)


def _quantizer_lines(record: logging.LogRecord) -> bool:
    """False for the quantizer's own lines (logged on the root logger from onnxruntime's modules)."""
    return "onnxruntime" not in record.pathname


def session(file: Path, *, threads: int) -> Any:
    """An ONNX Runtime session that runs a call on `threads` cores (the encoder uses 1 and calls
    it from one thread per core); extra threads, if any, sleep instead of spinning when idle, so
    the API and the database on the same cores get them back."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
