"""Tests for pneumokeras.app.model_panel: the model panel and the decision rule from the card."""

from __future__ import annotations

from model_fixtures import contract_ensemble

from pneumokeras.app import model_panel
from pneumokeras.models import model_card
from pneumokeras.models.model_card import ModelCard, load_classifier

SIZE = 32


def _with_card(classifier, card):
    return model_card.Classifier(classifier.model, card, classifier.path)


def test_model_facts_from_a_full_card(classifier):
    card = classifier.card.replace(
        model_name="resnet18",
        backend="jax",
        keras_version="3.15.1",
        best_epoch=4,
        config={"model": {"filters": 32, "last_stride": 1}},
        data={
            "source": "synthetic",
            "image_size": 128,
            "splits": {"train": {"count": 480, "positives": 108}},
        },
        validation={"auc": 0.97, "loss": 0.3, "box_map_loss": 0.2, "recall": 0.9},
        calibration={
            "n": 60,
            "fitted_on": "val",
            "nll_before": 0.31,
            "nll_after": 0.28,
            "applied": True,
        },
        gradcam_layer="stack4_block2_out",
    )
    full = _with_card(classifier, card)
    facts = dict(model_panel.model_facts(full))
    assert facts["architecture"].startswith("resnet18 (filters 32, last_stride 1), ")
    assert (
        facts["trained under"] == f"Keras 3.15.1, jax backend, pneumokeras {card.project_version}"
    )
    assert facts["trained on"] == "synthetic at 128 px: train 480 (108 positive)"
    assert facts["validation (epoch 4)"] == "auc 0.970, recall 0.900"
    assert facts["calibration"] == "T = 1.7, fitted on 60 val images; NLL 0.310 → 0.280"
    assert facts["threshold"] == "0.450: Youden's J on the validation split"
    assert facts["Grad-CAM layer (default)"] == "stack4_block2_out"
    assert "members" not in facts
    assert "temperature T = 1.7" in model_panel.decision_rule(full)
    assert "P ≥ 0.450" in model_panel.decision_rule(full)
    assert model_panel.probability_label(full) == "P(pneumonia), calibrated"
    kept = _with_card(classifier, card.replace(temperature=1.0, calibration={"applied": False}))
    assert (
        "T = 1: the temperature fitted on the validation split was not supported"
        in model_panel.decision_rule(kept)
    )
    assert dict(model_panel.model_facts(kept))["calibration"].endswith(
        "(fit not applied: not supported by the data)"
    )


def test_an_unfitted_or_missing_card_is_said_so(classifier):
    unfitted = _with_card(classifier, ModelCard(input_size=SIZE))
    assert "never fitted" in model_panel.decision_rule(unfitted)
    assert "run `evaluate`" in dict(model_panel.model_facts(unfitted))["threshold"]
    # T = 1 and never fitted: the headline does not claim a calibration.
    assert model_panel.probability_label(unfitted) == "P(pneumonia), uncalibrated"
    unfitted.card_missing = True
    assert model_panel.decision_rule(unfitted).startswith("No model card")
    assert model_panel.probability_label(unfitted) == "P(pneumonia), uncalibrated"


def test_the_panel_of_an_ensemble_speaks_of_its_folds(tmp_path):
    ensemble = load_classifier(contract_ensemble(SIZE, tmp_path, members=3))
    facts = dict(model_panel.model_facts(ensemble))
    assert facts["members"] == (
        "3 fold models (member_0, member_1, member_2), their probabilities averaged; each "
        "one's held-out ROC-AUC 0.800, 0.810, 0.820"
    )
    assert facts["out-of-fold (3 folds pooled)"] == "auc 0.830, recall 0.700"
    assert not any(key.startswith("validation") for key in facts)
    assert facts["threshold"] == "0.400: Youden's J on the pooled out-of-fold predictions"
    assert facts["calibration"].startswith("T = 1.3, fitted on 48 out-of-fold images")
    assert facts["Grad-CAM layer (default)"] == "bn of each member"
    rule = model_panel.decision_rule(ensemble)
    assert "calibrated with temperature T = 1.3" in rule
    assert "(threshold: Youden's J on the pooled out-of-fold predictions)" in rule
    assert "validation" not in rule
    assert model_panel.explainable_layers(ensemble) == ["pixel_rescaling", "conv", "bn"]
    assert model_panel.model_summary(ensemble)["members"] == 3
