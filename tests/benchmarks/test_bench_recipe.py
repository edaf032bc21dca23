"""The recipe benchmark's own logic: spread over seeds, drops, targets, the Markdown."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "bench_recipe", ROOT / "benchmarks" / "bench_recipe.py"
)
bench_recipe = importlib.util.module_from_spec(spec)
sys.modules["bench_recipe"] = bench_recipe
spec.loader.exec_module(bench_recipe)


def _scores(auc, pointing, ece=0.05):
    values = {
        "roc_auc": auc,
        "sensitivity": 0.9,
        "specificity": 0.95,
        "ece": ece,
        "pointing_game": pointing,
        "energy_in_boxes": 0.5,
    }
    return {k: {"value": v, "ci95": [v - 0.01, v + 0.01]} for k, v in values.items()}


def _seed(seed, auc_in, auc_shift, pointing):
    return {
        "seed": seed,
        "in_domain": _scores(auc_in, pointing),
        "shifted": _scores(auc_shift, pointing - 0.1, ece=0.1),
    }


SEEDS = [_seed(1, 0.98, 0.97, 0.95), _seed(2, 0.96, 0.93, 0.91)]


def test_spread_over_seeds():
    spread = bench_recipe.spread([0.98, 0.96, None, float("nan")])
    assert spread["n"] == 2
    assert spread["mean"] == pytest.approx(0.97)
    assert spread["sd"] == pytest.approx(0.014142, abs=1e-6)
    assert (spread["min"], spread["max"]) == (0.96, 0.98)
    assert bench_recipe.spread([None])["mean"] is None
    assert bench_recipe.spread([0.5])["sd"] == 0.0


def test_summary_drops_are_per_seed_differences():
    summary = bench_recipe.summarise(SEEDS)
    assert summary["in_domain"]["roc_auc"]["mean"] == pytest.approx(0.97)
    assert summary["shifted"]["roc_auc"]["mean"] == pytest.approx(0.95)
    # Per-seed drops: 0.98 - 0.97 and 0.96 - 0.93.
    assert summary["drop"]["roc_auc"]["min"] == pytest.approx(0.01)
    assert summary["drop"]["roc_auc"]["max"] == pytest.approx(0.03)
    assert summary["drop"]["ece"]["mean"] == pytest.approx(-0.05)


def test_targets_are_judged_on_the_means():
    targets = {
        (t["metric"], t["set"]): t
        for t in bench_recipe.check_targets(bench_recipe.summarise(SEEDS))
    }
    assert targets[("roc_auc", "in_domain")]["met"] is True  # 0.97 ≥ 0.97
    assert targets[("roc_auc", "drop")]["met"] is True  # 0.02 ≤ 0.02
    assert targets[("pointing_game", "in_domain")]["met"] is True  # 0.93
    worse = bench_recipe.check_targets(bench_recipe.summarise([_seed(1, 0.96, 0.9, 0.8)]))
    assert [t["met"] for t in worse] == [False, False, False]


def _record():
    summary = bench_recipe.summarise(SEEDS)
    return {
        "script": "bench_recipe",
        "command": "python benchmarks/bench_recipe.py",
        "machine": {
            "cpu": "CPU X",
            "cpus": 2,
            "cpu_flags": "avx2",
            "backend": "tensorflow",
            "load_start": "1.0 / 1.0 / 1.0",
        },
        "settings": {
            "config": "configs/demo.yaml",
            "overrides": [],
            "seeds": [1, 2],
            "train_patients": 600,
            "dicom_size": 512,
            "image_size": 128,
            "test_seed": 9,
        },
        "test_sets": {
            "in_domain": {"n": 2000, "positives": 450},
            "shifted": {"n": 2000, "positives": 450},
        },
        "seeds": SEEDS,
        "summary": summary,
        "targets": bench_recipe.check_targets(summary),
        "pipeline": {
            "default": {"img_per_s": 400.0},
            "recipe": {"img_per_s": 350.0},
            "cost": 0.125,
        },
    }


def test_markdown_holds_the_figures_and_survives_json():
    record = json.loads(json.dumps(_record()))
    text = bench_recipe.render_markdown(record)
    assert "| ROC-AUC | 0.970 ± 0.014 (0.960–0.980) | 0.950 ± 0.028 (0.930–0.970) |" in text
    assert "| seed 2, in-domain | 0.960 (0.950–0.970) |" in text
    assert "| ROC-AUC, drop <= 0.02 | 0.020 | yes |" in text
    assert "| cost of the recipe's augmentation | 12.5 % |" in text
    assert text.startswith("Machine: CPU X, 2 logical CPUs, flags: avx2, ")


def test_a_variants_record_renders_its_table():
    record = _record()
    variants = {
        "variants": [
            {
                "name": "acq",
                "overrides": ["augment.gamma=0.3"],
                "seeds": [1, 2],
                "summary": record["summary"],
                "machine": {**record["machine"], "load_start": "2.5 / 2.0 / 1.0"},
            },
        ]
    }
    text = bench_recipe.render_markdown(variants)
    assert text.startswith("Machine: CPU X, 2 logical CPUs, flags: avx2, ")
    assert "load average at the start of each variant's run: 2.5." in text
    assert "\n| variant" in text
    assert "| **acq**: `augment.gamma=0.3` | 1, 2 | 0.970 ± 0.014" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "a,b"], "comma-separated"),
        (["--seeds", ""], "at least one"),
        (["--folds", "1"], "--folds"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_recipe._arguments(argv)
    assert message in capsys.readouterr().err


def test_a_recorded_run_is_reused_only_for_the_same_training():
    from pneumokeras.config import load_config

    current = load_config(None, ["train.epochs=3"]).to_dict()
    recorded = json.loads(json.dumps(current))
    assert bench_recipe.same_training(recorded, current)
    recorded["train"]["xla"] = not current["train"]["xla"]  # speed only
    del recorded["augment"]["on_device"]  # added since, default now
    assert bench_recipe.same_training(recorded, current)
    recorded["train"]["epochs"] = 4
    assert not bench_recipe.same_training(recorded, current)
    on_device = load_config(None, ["train.epochs=3", "augment.on_device=true"]).to_dict()
    recorded["train"]["epochs"] = 3
    assert not bench_recipe.same_training(recorded, on_device)
