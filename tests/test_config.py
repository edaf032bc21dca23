from pathlib import Path

import pytest

from pneumokeras.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_seed_recipe():
    config = Config()
    assert config.data.image_size == 224
    assert config.data.batch_size == 32
    assert config.train.epochs == 20
    assert config.train.learning_rate == 1e-4
    assert config.train.schedule == "cosine"
    assert config.model.name == "resnet18"


@pytest.mark.parametrize("name", ["rsna.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, Config)


def test_rsna_yaml_values():
    config = load_config(CONFIGS / "rsna.yaml")
    assert config.data.image_size == 224
    assert config.augment.rotation_degrees == 10.0
    assert config.augment.flip


def test_yaml_load_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  image_size: 64\ntrain:\n  epochs: 5\n")
    config = load_config(
        path,
        [
            "train.epochs=3",
            "train.learning_rate=1e-3",
            "augment.flip=false",
            "train.precision=mixed_bfloat16",
        ],
    )
    assert config.data.image_size == 64
    assert config.train.epochs == 3
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.augment.flip is False
    assert config.train.precision == "mixed_bfloat16"


def test_demo_yaml_trains_with_box_supervision():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert config.model.last_stride == 1
    assert config.train.box_loss_weight == 1.0
    assert config.explain.layer == ""  # the last stage, which the box loss trains
    defaults = Config()
    assert defaults.model.last_stride == 2
    assert defaults.train.box_loss_weight == 0.0


def test_int_widens_to_float():
    assert load_config(None, ["augment.rotation_degrees=5"]).augment.rotation_degrees == 5.0


def test_config_is_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.train.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, named",
    [
        ("no.such_key=1", "no"),
        ("train.no_such_key=1", "train.no_such_key"),
        ("train.epochs=three", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("augment.flip=3", "augment.flip"),
        ("train.precision=float64", "train.precision"),
        ("data.image_size=0", "data.image_size"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.last_stride=3", "model.last_stride"),
        ("train.box_loss_weight=-1", "train.box_loss_weight"),
        ("trainepochs=3", "trainepochs"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        load_config(path)


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: '32'\n")
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config(path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_to_dict_round_trip():
    from pneumokeras.config import from_dict

    config = load_config(None, ["train.epochs=7"])
    assert from_dict(config.to_dict()) == config


def test_age_bands_and_the_subgroup_minimum():
    import json

    config = load_config(
        None, ["evaluate.age_bands=[18, 65]", "evaluate.min_subgroup_class_count=5"]
    )
    assert config.evaluate.age_bands == (18, 65)
    assert config.evaluate.min_subgroup_class_count == 5
    # As JSON writes and reads it back (run records, model cards): equal settings.
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert config.to_dict()["evaluate"]["age_bands"] == [18, 65]
    for value, message in [
        ("[65, 18]", "must increase"),
        ("[18, 18]", "must increase"),
        ("18", "must be a list"),
        ("[18.5]", "must be an integer"),
        ("[]", "at least one age"),
        ("[0, 40]", "from 1 to 90"),
        ("[95]", "from 1 to 90"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"evaluate.age_bands={value}"])
    with pytest.raises(ConfigError, match="min_subgroup_class_count must be > 0"):
        load_config(None, ["evaluate.min_subgroup_class_count=0"])


def test_presets_by_name_from_any_folder(tmp_path, monkeypatch):
    from pneumokeras import config as config_lib

    assert config_lib.preset_dir() == CONFIGS  # a checkout: the top-level folder
    assert {"demo", "rsna"} <= set(config_lib.presets())
    monkeypatch.chdir(tmp_path)
    assert config_lib.resolve_config_path("rsna") == CONFIGS / "rsna.yaml"
    assert config_lib.resolve_config_path("demo.yaml") == CONFIGS / "demo.yaml"
    assert load_config("demo") == load_config(CONFIGS / "demo.yaml")
    # A file of that name in the current folder wins; an unknown name stays a path.
    (tmp_path / "demo.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("demo.yaml").train.epochs == 3
    assert config_lib.resolve_config_path("nosuch") == Path("nosuch")
    assert config_lib.resolve_config_path("sub/rsna.yaml") == Path("sub/rsna.yaml")
    with pytest.raises(ConfigError, match="cannot read config nosuch"):
        load_config("nosuch")


def test_preset_folder_inside_the_package_comes_first(tmp_path, monkeypatch):
    """As installed from the wheel: `pneumokeras/configs/*.yaml` beside config.py."""
    from pneumokeras import config as config_lib

    inside = tmp_path / "pneumokeras" / "configs"
    inside.mkdir(parents=True)
    (inside / "demo.yaml").write_text("train:\n  epochs: 4\n")
    monkeypatch.setattr(config_lib, "_PRESET_DIRS", (inside, CONFIGS))
    assert config_lib.preset_dir() == inside
    assert load_config("demo").train.epochs == 4
    monkeypatch.setattr(config_lib, "_PRESET_DIRS", (tmp_path / "none",))
    with pytest.raises(ConfigError, match=r"presets \(configs/\*\.yaml\) are missing"):
        config_lib.preset_dir()


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("auto", "auto")])
def test_xla_is_true_false_or_auto(value, expected):
    assert Config().train.xla == "auto"
    xla = load_config(None, [f"train.xla={value}"]).train.xla
    assert xla == expected
    assert type(xla) is type(expected)


@pytest.mark.parametrize(
    "override", ["train.xla=1", "train.xla=yes_please", "model.last_stride=true"]
)
def test_literal_choices_compare_types_too(override):
    """`1 == True` in Python, yet `1` is not the choice `true` (nor `true` the stride 1)."""
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(None, [override])


def test_choices_are_named_as_yaml_spells_them():
    with pytest.raises(ConfigError, match=r"train\.xla must be one of true, false, auto; got 2"):
        load_config(None, ["train.xla=2"])
