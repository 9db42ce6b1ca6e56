from pathlib import Path

import pytest

from medtl.config import Config, load_config
from medtl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=3", "train.lr=1e-4", "preprocess.size=[32, 32]", "model.weights=null"])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.preprocess.size == [32, 32] and cfg.model.weights is None


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert isinstance(load_config(path), Config)


def test_typos_and_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.strategy"):
        load_config(None, ["train.strategy=everything"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        load_config(bad)
    assert "\n" not in str(err.value)


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(None, ["name=x", "augment.domain_shift=strong"])
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
