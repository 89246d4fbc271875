"""Config layering (defaults -> YAML -> --key=value) and its one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from vislab.config import (CommonConfig, commented_yaml, config_keys, field_comments, load_config,
                           split_overrides, to_dict)
from vislab.errors import VislabError


@dataclasses.dataclass(frozen=True)
class Section:
    dropout: float = 0.0  # dropout probability
    widths: tuple[int, ...] = (64, 128)  # channels per stage


@dataclasses.dataclass(frozen=True)
class ToyConfig(CommonConfig):
    epochs: int = 30  # redeclared default
    model_name: str = "Q1_1"  # a model
    flag: bool = False  # a switch
    model: Section = dataclasses.field(default_factory=Section)  # a nested section


def load(*argv: str, yaml_file=None):
    return load_config(ToyConfig, yaml_file=yaml_file, overrides=split_overrides(list(argv)))


def test_defaults_then_yaml_then_overrides(tmp_path):
    assert load().epochs == 30 and load().seed == 0
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nseed: 3\nmodel:\n  dropout: 0.1\n")
    config = load("--epochs=7", "--model.widths=[8,16,32]", yaml_file=path)
    assert (config.epochs, config.seed, config.model.dropout, config.model.widths) == (7, 3, 0.1, (8, 16, 32))
    assert dataclasses.is_dataclass(config) and isinstance(config, ToyConfig)


def test_kebab_case_space_separated_and_bare_flags():
    config = load("--model-name", "Q1_4", "--flag", "--data-root=builtin")
    assert (config.model_name, config.flag, config.data_root) == ("Q1_4", True, "builtin")


@pytest.mark.parametrize("argv, expected", [
    (["--no-such-key=1"], "unknown config key 'no_such_key'"),
    (["--epoch=3"], "did you mean: epochs"),
    (["--model.dropot=1"], "did you mean: model.dropout"),
    (["--epochs=abc"], "config key 'epochs'"),
    (["--epochs=0"], "must be at least 1"),
    (["--precision=bf16"], "did you mean: bf16-mixed"),
    (["stray"], "unexpected argument"),
])
def test_errors_are_one_line_and_name_the_key(argv, expected):
    with pytest.raises(VislabError) as error:
        load(*argv)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(VislabError, match="not valid YAML"):
        load(yaml_file=bad)
    with pytest.raises(VislabError, match="not found"):
        load(yaml_file=tmp_path / "missing.yaml")
    unknown = tmp_path / "typo.yaml"
    unknown.write_text("epoch: 3\n")
    with pytest.raises(VislabError, match="did you mean: epochs"):
        load(yaml_file=unknown)
    python_object = tmp_path / "object.yaml"
    python_object.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(VislabError):
        load(yaml_file=python_object)


def test_commented_yaml_round_trips_and_every_field_is_commented(tmp_path):
    text = commented_yaml(ToyConfig())
    assert "# a nested section\nmodel:\n  # dropout probability\n  dropout: 0.0" in text
    path = tmp_path / "defaults.yaml"
    path.write_text(text)
    assert load(yaml_file=path) == ToyConfig()
    assert set(field_comments(ToyConfig)) >= {f.name for f in dataclasses.fields(ToyConfig)}
    assert "model.widths" in config_keys(ToyConfig)


def test_every_study_config_field_is_commented_and_defaults_load():
    from vislab.studies import available_studies, get_study

    for name in available_studies():
        config_class = get_study(name).Config
        missing = {f.name for f in dataclasses.fields(config_class)} - set(field_comments(config_class))
        assert not missing, f"{name}: fields without a comment: {missing}"
        config = load_config(config_class)
        assert to_dict(config)["seed"] == 0


# --- precision 'auto' -----------------------------------------------------------------------------


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_in_bf16(monkeypatch, has_bf16, expected):
    from vislab import engine

    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: has_bf16)
    assert engine.resolve_precision("auto", "cpu") == expected
    for given in ("32-true", "bf16-mixed"):  # an explicit choice is kept whatever the hardware
        assert engine.resolve_precision(given, "cpu") == given


@pytest.mark.parametrize("flags, expected", [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16 amx_tile", True),
                                             ("fpu avx512f avx512bw avx2", False)])
def test_cpu_bf16_is_read_from_the_cpuinfo_flags(monkeypatch, tmp_path, flags, expected):
    from vislab import engine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    real_path = engine.Path
    monkeypatch.setattr(engine, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else real_path(path))
    assert engine.cpu_has_bf16() is expected


def test_precision_auto_is_a_valid_config_value_and_a_typo_is_not():
    from vislab.studies.cnn import Config

    assert load_config(Config, overrides=["precision=auto"]).precision == "auto"
    with pytest.raises(VislabError, match="'precision': 'bf16' is not one of"):
        load_config(Config, overrides=["precision=bf16"])
