"""Configuration: defaults load, user files override, bad values are refused by field name."""

from __future__ import annotations

from pathlib import Path

import pytest

from poppyscan.config import DEFAULT_CONFIG_PATH, Config, load_config
from poppyscan.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_shipped_yaml():
    cfg = load_config()
    assert isinstance(cfg, Config)
    # every key of the packaged YAML maps onto a dataclass field (an unknown key would raise)
    assert cfg.detect.batch_size == 8
    assert cfg.train.gsd_m == pytest.approx(0.04)
    assert cfg.tasks.admin_fields == ("county", "township", "village")
    # configs/default.yaml is the same file the package ships
    assert (REPO / "configs" / "default.yaml").read_text() == DEFAULT_CONFIG_PATH.read_text()


def test_user_file_overrides_only_its_keys(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("detect:\n  min_area_m2: 4\n  threshold: 0.7\n")
    cfg = load_config(f)
    assert cfg.detect.min_area_m2 == 4.0
    assert cfg.detect.threshold == 0.7
    assert cfg.detect.batch_size == 8  # untouched default


def test_cli_overrides_take_precedence_and_none_is_skipped(tmp_path):
    cfg = load_config(overrides={"detect.device": "cpu", "detect.threshold": None})
    assert cfg.detect.device == "cpu"
    assert cfg.detect.threshold is None


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("detect:\n  overlap: 0.7\n", "detect.overlap"),
        ("detect:\n  batch_size: 0\n", "detect.batch_size"),
        ("detect:\n  device: tpu\n", "detect.device"),
        ("detect:\n  min_prob_mean: 1.0\n", "detect.min_prob_mean"),
        ("detect:\n  bogus: 1\n", "detect.bogus"),
        ("train:\n  tile_size: 100\n", "train.tile_size"),
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("tasks:\n  formats: [csv, shp]\n", "tasks.formats"),
        ("survey:\n  site_link_distance_m: -1\n", "survey.site_link_distance_m"),
        ("nonsense:\n  a: 1\n", "nonsense"),
    ],
)
def test_validation_errors_name_the_field(tmp_path, yaml_text, field):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(f)


def test_bool_is_not_a_number(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("detect:\n  batch_size: true\n")
    with pytest.raises(ConfigError, match="detect.batch_size.*integer"):
        load_config(f)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("detect: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
