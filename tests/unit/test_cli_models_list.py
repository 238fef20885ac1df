"""`sift models list` shows each version's own holdout metrics: ranking metrics for a recommend
version, accuracy for a classifier's."""

from __future__ import annotations

from services.cli.output import version_cells

RECOMMEND = {
    "hr@10": 0.8148,
    "ndcg@10": 0.5823,
    "baseline": {"version": None, "hr@10": 0.7984, "ndcg@10": 0.569, "users": 610},
    "learned": {"hr@10": 0.73, "ndcg@10": 0.53},
}


def test_a_recommend_version_shows_hr_and_ndcg_against_its_baseline() -> None:
    quality, baseline, data = version_cells("recommend", RECOMMEND, {"interactions": 100836, "users": 610})
    assert quality == "HR@10 0.8148 NDCG@10 0.5823"
    assert baseline == "HR@10 0.7984 NDCG@10 0.569 (hand-set blend)"
    assert data == "100836 interactions"
    served = {**RECOMMEND, "baseline": {"version": "recommend-1", "hr@10": 0.81, "ndcg@10": 0.58}}
    assert version_cells("recommend", served, {})[1] == "HR@10 0.81 NDCG@10 0.58 (recommend-1)"


def test_a_classifier_version_shows_accuracy_and_macro_f1() -> None:
    metrics = {"accuracy": 0.91, "macro_f1": 0.88, "baseline": {"accuracy": 0.85}}
    assert version_cells("support", metrics, {"labels": 1200}) == (
        "accuracy 0.91 macro-F1 0.88",
        "accuracy 0.85",
        "1200 labels",
    )


def test_a_version_without_metrics_shows_empty_cells() -> None:
    assert version_cells("recommend", {}, {}) == ("", "", "")
    assert version_cells("support", {}, {}) == ("", "", "")
