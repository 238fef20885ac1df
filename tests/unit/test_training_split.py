"""The training run's pure parts: the deterministic stratified split and the precision choice."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.config import Settings
from services.training.budget import epochs_for
from services.training.dataset import Example, split, with_label_descriptions
from services.training.estimate import folds, kfold_scores, split_for_run
from services.training.heads import fit_head, neighbour_smoothed, refit_anchored
from services.training.tuning import precision_args


def examples() -> list[Example]:
    return [Example(f"text {label} {i}", label) for label in ("a", "b", "c") for i in range(20)] + [
        Example("lonely", "d")
    ]


def test_split_is_stratified_deterministic_and_order_free() -> None:
    data = examples()
    train, test = split(data, holdout=0.2)
    per_label = {label: sum(e.label == label for e in test) for label in "abc"}
    assert all(1 <= n <= 9 for n in per_label.values()), per_label  # about 20% of each label, never none
    assert Example("lonely", "d") in train  # one example: training only
    shuffled = data[:]
    random.Random(7).shuffle(shuffled)
    assert split(shuffled, holdout=0.2) == (train, test)


def test_a_text_keeps_its_side_as_labels_grow() -> None:
    _, test = split(examples(), holdout=0.2)
    more = examples() + [Example(f"new {i}", "a") for i in range(5)]
    _, test_more = split(more, holdout=0.2)
    assert {e.text for e in test} <= {e.text for e in test_more}


def test_precision_is_mixed_on_a_gpu_only() -> None:
    assert precision_args("cpu", bf16_supported=True) == {"bf16": False, "fp16": False}
    assert precision_args("cuda", bf16_supported=True) == {"bf16": True, "fp16": False}
    assert precision_args("cuda:1", bf16_supported=False) == {"bf16": False, "fp16": True}


def test_small_label_sets_get_more_epochs_within_bounds() -> None:
    s = Settings(train_epochs=1, train_max_epochs=8, train_min_examples_seen=9000)
    assert epochs_for(9000, s) == 1.0 and epochs_for(20_000, s) == 1.0
    assert abs(epochs_for(3000, s) - 3.0) < 1e-9
    assert epochs_for(770, s) == 8.0


def test_self_training_adds_only_confident_predictions() -> None:
    import numpy as np

    from services.training.heads import pseudo_label, train_head

    def encode(texts: list[str]) -> np.ndarray:  # "left ..." near (1, 0), "right ..." near (0, 1), "mid" between
        return np.array(
            [
                [1.0, 0.1] if t.startswith("left") else [0.1, 1.0] if t.startswith("right") else [0.7, 0.7]
                for t in texts
            ],
            dtype=np.float32,
        )

    labeled = [Example(f"left {i}", "L") for i in range(5)] + [Example(f"right {i}", "R") for i in range(5)]
    settings = Settings(train_pseudo_min_prob=0.3)
    head, n = train_head(encode, labeled, unlabeled=["left a", "right b", "mid"], settings=settings)
    pseudo = pseudo_label(encode, head, ["left a", "right b", "mid"], settings=settings)
    assert {(e.text, e.label) for e in pseudo} == {("left a", "L"), ("right b", "R")}  # 2 labels: p >= 2/2 * ...
    assert n == 2


def test_neighbour_smoothing_lets_an_unsure_text_borrow_its_neighbours_label() -> None:
    # Three texts close together and one far away; the middle one of the cluster is unsure, and
    # its nearest neighbours are sure it is label 0.
    vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.0, 1.0]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.9, 0.1], [0.1, 0.9]])
    smoothed = neighbour_smoothed(vectors, probs, k=2, chunk=3)  # chunks smaller than n: same graph
    assert smoothed[1].argmax() == 0
    assert smoothed[3].argmax() == 1  # a text keeps half of its own evidence
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0)
    np.testing.assert_array_equal(neighbour_smoothed(vectors, probs, k=0), probs)
    np.testing.assert_array_equal(neighbour_smoothed(vectors[:1], probs[:1], k=5), probs[:1])


def test_label_descriptions_join_the_examples_only_with_few_labels_per_class() -> None:
    few = [Example(f"where is my card {i}", "card_arrival") for i in range(3)] + [
        Example(f"refund {i}", "Refund_not_showing_up") for i in range(3)
    ]
    settings = Settings(train_pseudo_below=30)
    out = with_label_descriptions(few, {"card_arrival": "when will my card arrive"}, settings)
    assert out[: len(few)] == few
    assert set(out[len(few) :]) == {
        Example("when will my card arrive", "card_arrival"),
        Example("Refund not showing up", "Refund_not_showing_up"),  # no description: the name in words
    }
    many = few * 20
    assert with_label_descriptions(many, {}, settings) == many
    assert with_label_descriptions(few, {}, Settings(train_label_descriptions=False)) == few


def test_self_training_keeps_the_classifier_trained_with_the_encoder() -> None:
    from types import SimpleNamespace

    from services.classify.head import Head
    from services.training.heads import head_after_fine_tune

    def encode(texts: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if t.startswith("left") else [0.0, 1.0] for t in texts], dtype=np.float32)

    encoder = SimpleNamespace(encode=encode)
    labeled = [Example(f"left {i}", "L") for i in range(6)] + [Example(f"right {i}", "R") for i in range(6)]
    # A deliberately wrong classifier: the test sees which head comes back, not how good it is.
    classifier = Head(("L", "R"), np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32), np.zeros(2, np.float32))
    settings = Settings()

    head, report = head_after_fine_tune(
        encoder, labeled, fit=labeled, val=[], unlabeled=["left x", "right y"], settings=settings, classifier=classifier
    )
    assert head is classifier and report["head_pseudo_labeled"] == 0

    # People's labels kept out: a head is refit with C chosen on them, and averaged with the
    # classifier refit on every label (refit_anchored).
    fit, val = labeled[1:6] + labeled[7:], [labeled[0], labeled[6]]
    head, report = head_after_fine_tune(
        encoder, labeled, fit=fit, val=val, unlabeled=[], settings=settings, classifier=classifier
    )
    vectors, labels = encode([e.text for e in labeled]), [e.label for e in labeled]
    refit, tuned = fit_head(vectors, labels, cs=(report["head_c"],)), refit_anchored(classifier, vectors, labels)
    np.testing.assert_allclose(head.weights, (refit.weights + tuned.weights) / 2, rtol=1e-5)
    np.testing.assert_allclose(head.bias, (refit.bias + tuned.bias) / 2, rtol=1e-5, atol=1e-6)
    assert head.predict(encode(["left z", "right z"])) == ["L", "R"]  # the refit head is the surer one here

    # A classifier without one of the labels (it was only in val) cannot be averaged: the refit head alone.
    partial = Head(("L",), np.array([[1.0, 0.0]], dtype=np.float32), np.zeros(1, np.float32))
    head, report = head_after_fine_tune(
        encoder, labeled, fit=fit, val=val, unlabeled=[], settings=settings, classifier=partial
    )
    assert head.labels == ("L", "R") and report["head"] == "refit"
    np.testing.assert_allclose(head.weights, refit.weights, rtol=1e-6)


def test_the_classifier_refit_on_every_label_fixes_its_bias_and_keeps_its_weights_near() -> None:
    from services.classify.head import Head

    rng = np.random.default_rng(0)
    left = np.column_stack([rng.uniform(-1.0, -0.2, 40), rng.normal(0.0, 0.3, 40)])
    right = np.column_stack([rng.uniform(0.2, 1.0, 40), rng.normal(0.0, 0.3, 40)])
    vectors, labels = np.vstack([left, right]).astype(np.float32), ["L"] * 40 + ["R"] * 40
    # The fine-tuning's direction is right, but its bias sends every text to L.
    weights = np.array([[-2.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    classifier = Head(("L", "R"), weights, np.array([3.0, -3.0], dtype=np.float32))
    assert set(classifier.predict(vectors)) == {"L"}

    held = refit_anchored(classifier, vectors, labels, pull=1.0)
    assert held.predict(vectors) == labels  # the bias is free: it moves back
    free = refit_anchored(classifier, vectors, labels, pull=1e-4)
    assert free.predict(vectors) == labels
    moved = [float(np.abs(h.weights - weights).max()) for h in (held, free)]
    assert moved[0] < 0.5 < moved[1]  # the pull keeps the weights near the fine-tuning's
    assert held.labels == classifier.labels and held.weights.dtype == np.float32


def test_the_head_c_is_chosen_by_log_loss_on_val() -> None:
    from services.training.heads import HEAD_CS, choose_c_on

    rng = np.random.default_rng(0)

    def cloud(label: str, centre: float, n: int) -> list[Example]:
        return [Example(f"{label} {centre} {i} {rng.normal():.6f}", label) for i in range(n)]

    def encode(texts: list[str]) -> np.ndarray:  # the text carries its point: well apart, so every C is right
        return np.array([[float(t.split()[1]) + float(t.split()[3]) * 0.1, 1.0] for t in texts], dtype=np.float32)

    fit = cloud("L", -1.0, 20) + cloud("R", 1.0, 20)
    val = cloud("L", -1.0, 5) + cloud("R", 1.0, 5)
    # Accuracy ties (1.0 for every C, so it would take the smallest); log-loss prefers the surest head.
    assert choose_c_on(encode, fit, val) == HEAD_CS[-1]
    # Val texts on the wrong side: the surest head pays most for them, the least sure one least.
    wrong = [Example(e.text, "R" if e.label == "L" else "L") for e in val]
    assert choose_c_on(encode, fit, wrong) == HEAD_CS[0]
    assert choose_c_on(encode, fit, []) == 16.0


def test_averaged_heads_mean_their_logits() -> None:
    import pytest

    from services.classify.head import Head

    a = Head(("x", "y"), np.array([[2.0, 0.0], [0.0, 1.0]], dtype=np.float32), np.array([0.5, 0.0], np.float32))
    b = Head(("x", "y"), np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32), np.array([0.0, 0.3], np.float32))
    v = np.array([[0.3, 0.9], [1.0, -0.2]], dtype=np.float32)
    geometric = np.sqrt(a.probs(v) * b.probs(v))
    np.testing.assert_allclose(a.averaged_with(b).probs(v), geometric / geometric.sum(axis=1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="different labels"):
        a.averaged_with(Head(("y", "x"), b.weights, b.bias))


def test_epochs_shrink_to_the_time_left_and_never_below_one_step() -> None:
    from services.training.budget import fit_epochs

    # 1,000 examples, 2 epochs, batch 10: 200 steps of 0.5 s = 100 s.
    assert fit_epochs(2.0, examples=1000, batch_size=10, step_s=0.5, seconds=150.0) == 2.0
    assert fit_epochs(2.0, examples=1000, batch_size=10, step_s=0.5, seconds=25.0) == 0.5  # 50 steps
    assert fit_epochs(2.0, examples=1000, batch_size=10, step_s=0.5, seconds=-5.0) == 10 / 1000  # one step
    assert fit_epochs(2.0, examples=1000, batch_size=10, step_s=0.0, seconds=1.0) == 2.0  # not measured


def test_a_soup_is_the_mean_of_its_members_weights_and_keeps_integer_buffers() -> None:
    import torch

    from services.training.tuning import averaged_state

    first = {"w": torch.tensor([[1.0, 2.0]]), "ids": torch.tensor([0, 1, 2])}
    second = {"w": torch.tensor([[3.0, -2.0]]), "ids": torch.tensor([0, 1, 2])}
    soup = averaged_state([first, second])
    assert torch.equal(soup["w"], torch.tensor([[2.0, 0.0]]))
    assert soup["ids"].dtype == torch.int64 and torch.equal(soup["ids"], torch.tensor([0, 1, 2]))
    assert torch.equal(averaged_state([first])["w"], first["w"])  # one member: itself


def test_remembered_encodes_each_distinct_text_once_and_keeps_the_order() -> None:
    from services.training.heads import remembered

    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.array([[float(len(t)), 1.0] for t in texts])

    cached = remembered(encode)
    assert cached(["aa", "b", "aa"]).tolist() == [[2.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    assert cached(["b", "ccc"]).tolist() == [[1.0, 1.0], [3.0, 1.0]]
    assert calls == [["aa", "b"], ["ccc"]]
    assert cached([]).shape[0] == 0


def test_the_timed_batch_is_padded_like_a_typical_one_not_like_the_longest_text() -> None:
    from services.training.batches import grouped_batches
    from services.training.budget import typical_batch

    # Texts of 10 to 120 tokens: batches group texts of about one length, so the timed batch is one
    # of the trainer's batches with the mean padded size, not the one holding the longest text.
    lengths = [10 + (i * 7) % 111 for i in range(3000)]
    batch = typical_batch(lengths, 32)
    assert len(batch) == len(set(batch)) == 32
    epoch = grouped_batches(lengths, 32, seed=0, epoch=0)
    assert sorted(batch) in [sorted(b) for b in epoch]
    padded = [len(b) * max(lengths[i] for i in b) for b in epoch]
    assert abs(32 * max(lengths[i] for i in batch) - sum(padded) / len(padded)) <= 32 * 3
    assert typical_batch(lengths, 32) == batch  # seeded
    assert sorted(typical_batch([5, 7, 9], 32)) == [0, 1, 2]  # fewer texts than a batch


def test_an_epoch_sees_every_example_once_in_batches_of_about_one_length() -> None:
    from services.training.batches import grouped_batches

    rng = np.random.default_rng(3)
    lengths = rng.integers(5, 90, size=4010).tolist()
    first = grouped_batches(lengths, 32, seed=7, epoch=0)
    assert sorted(i for b in first for i in b) == list(range(4010))
    assert sum(len(b) < 32 for b in first) == 1  # runs are whole batches but the last
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    order = rng.permutation(4010)
    random = sum(32 * max(lengths[i] for i in order[k : k + 32]) for k in range(0, 4010, 32))
    assert padded < 0.7 * random  # the point: far less padding than random batches
    assert padded <= 1.1 * sum(lengths)
    again = grouped_batches(lengths, 32, seed=7, epoch=0)
    assert again == first  # seeded
    later = grouped_batches(lengths, 32, seed=7, epoch=1)
    assert later != first and sorted(i for b in later for i in b) == list(range(4010))
    assert grouped_batches(lengths, 32, seed=8, epoch=0) != first  # each soup member's own order


def test_the_trainer_s_batch_sampler_yields_those_batches_and_follows_the_epoch() -> None:
    from datasets import Dataset

    from services.training.batches import grouped_batches, sampler_factory

    lengths = [3 + i % 40 for i in range(100)]
    dataset = Dataset.from_dict({"text": ["x"] * 100, "label": [0] * 100})
    sampler = sampler_factory(lengths)(dataset, batch_size=16, drop_last=False, seed=5)
    assert len(sampler) == 7 and list(sampler) == grouped_batches(lengths, 16, seed=5, epoch=0)
    sampler.set_epoch(2)
    assert list(sampler) == grouped_batches(lengths, 16, seed=5, epoch=2)
    dropping = sampler_factory(lengths)(dataset, batch_size=16, drop_last=True, seed=5)
    assert len(dropping) == 6 and all(len(b) == 16 for b in dropping)
    with pytest.raises(ValueError, match="the dataset has 100 examples, the lengths 99"):
        sampler_factory(lengths[:99])(dataset, batch_size=16, drop_last=False, seed=5)


def labeled(per_label: int, labels: int = 4) -> list[Example]:
    return [Example(f"text {label} {i}", f"l{label}") for label in range(labels) for i in range(per_label)]


def test_few_labels_train_on_every_label_and_many_keep_the_holdout() -> None:
    settings = Settings(train_kfold_below=30, train_holdout=0.2)
    few = labeled(10)
    train, holdout, kfold = split_for_run(few, settings)
    assert kfold and holdout == [] and train == few
    many = labeled(40)
    train, holdout, kfold = split_for_run(many, settings)
    assert not kfold and len(holdout) > 0 and len(train) + len(holdout) == len(many)
    assert split_for_run(few, Settings(train_kfold_below=0))[2] is False  # 0: always a holdout


def test_folds_are_stratified_deterministic_and_order_free() -> None:
    data = labeled(10)
    fold_of = folds(data, 5)
    for label in {e.label for e in data}:
        counts = np.bincount(fold_of[[i for i, e in enumerate(data) if e.label == label]], minlength=5)
        assert counts.tolist() == [2, 2, 2, 2, 2]
    shuffled = data[:]
    random.Random(3).shuffle(shuffled)
    again = dict(zip(shuffled, folds(shuffled, 5).tolist(), strict=True))
    assert again == dict(zip(data, fold_of.tolist(), strict=True))


def test_k_fold_scores_every_text_with_a_head_that_never_saw_it() -> None:
    data = labeled(10)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))

    def separable(texts: list[str]) -> np.ndarray:
        return np.stack([centres[int(t.split()[1])] + 0.1 * rng.normal(size=16) for t in texts])

    def noise(texts: list[str]) -> np.ndarray:
        return rng.normal(size=(len(texts), 16))

    fold_of = folds(data, 5)
    good, bad = kfold_scores(separable, data, fold_of), kfold_scores(noise, data, fold_of)
    assert good["n"] == bad["n"] == 40 and len(good["folds"]) == 5
    assert good["accuracy"] == 1.0 and bad["accuracy"] < 0.6 and bad["se"] > 0


def test_k_fold_with_fewer_texts_per_label_than_folds_scores_every_text_once() -> None:
    data = labeled(2)
    result = kfold_scores(lambda texts: np.eye(len(texts), 8)[:, :8] + 1.0, data, folds(data, 5))
    assert result["n"] == 8 and len(result["folds"]) == 2  # folds 2-4 are empty: not scored
    assert all(0.0 <= a <= 1.0 for a in result["folds"])


def test_the_cli_summary_names_the_estimate() -> None:
    from services.cli.train import summary_line

    base = {"task": "intent", "version": "v2", "promoted": True, "reindex_job": None}
    kfold = {"accuracy": 0.86, "macro_f1": 0.85, "holdout": 0, "n": 770, "folds": [0.85] * 5, "se": 0.01}
    assert "by 5-fold over 770 labels, se 0.01" in summary_line({**base, "metrics": kfold})
    held = {"accuracy": 0.93, "macro_f1": 0.93, "holdout": 2005, "n": 2005}
    assert "on 2005 held-out" in summary_line({**base, "metrics": held})
