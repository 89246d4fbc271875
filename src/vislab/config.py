"""Study configs: one frozen dataclass per study, layered defaults -> YAML file -> --key=value.

OmegaConf does the parsing, merging and type checking against the dataclass; this module
only turns its errors into one-line messages, reads the field comments for `vislab config`,
and normalises `--model-name` to `model_name`. Every study config extends `CommonConfig`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from vislab.errors import VislabError, did_you_mean

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """Keys every study has."""

    data_root: str = ""  # data folder laid out like shared/data ('' = $VISLAB_DATA, else ./data; 'builtin' = small generated data)
    seed: int = 0  # seeds weights, splits, batch order and augmentation
    epochs: int = 10  # training epochs (an upper bound when early stopping is on)
    batch_size: int = 128  # examples per optimisation step, over all processes
    num_threads: int = 0  # CPU threads for torch (0 = torch's default, one per core)
    out: str = "runs"  # run folders go to <out>/<study>/<UTC time>-<name>/
    precision: str = "32-true"  # '32-true', or 'bf16-mixed' (bf16 autocast: faster on GPUs and AMX CPUs only)
    accelerator: str = "auto"  # 'auto' (a GPU when there is one), 'cpu' or 'cuda'
    devices: int = 1  # processes (one per device) for distributed training
    strategy: str = "auto"  # Lightning strategy: 'auto', 'ddp', ...
    num_nodes: int = 1  # machines for distributed training
    deterministic: bool = False  # force deterministic kernels (slower; exact reruns on GPU)
    logger: str = "none"  # 'tensorboard': per-epoch metrics also to <run>/tensorboard (pip install tensorboard); 'none'

    def __post_init__(self) -> None:
        one_of("precision", self.precision, ("32-true", "bf16-mixed", "16-mixed", "64-true"))
        at_least("epochs", self.epochs, 1)
        at_least("batch_size", self.batch_size, 1)
        at_least("num_threads", self.num_threads, 0)
        at_least("devices", self.devices, 1)
        at_least("num_nodes", self.num_nodes, 1)
        one_of("logger", self.logger, ("none", "tensorboard"))


# ---------------------------------------------------------------------------------------------
# Checks a study's __post_init__ calls, so that a bad value fails before any work starts.


def one_of(key: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        hint = did_you_mean(str(value), map(str, choices)) or ""
        raise VislabError(f"config key {key!r}: {value!r} is not one of "
                          f"{', '.join(map(str, choices))}{hint}")


def at_least(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise VislabError(f"config key {key!r}: {value!r} must be at least {minimum}")


def in_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise VislabError(f"config key {key!r}: {value!r} must be between {low} and {high}")


# ---------------------------------------------------------------------------------------------
# Layering


def load_config(
    cls: type[C],
    *,
    yaml_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> C:
    """Build `cls` from its defaults, then `base` (e.g. a checkpoint's config), then a YAML
    file, then `key=value` overrides. Raises VislabError on unknown keys or wrong types."""
    schema = OmegaConf.structured(cls)
    OmegaConf.set_readonly(schema, False)  # frozen dataclasses make it read-only; we merge into it
    layers = [schema]
    if base is not None:
        layers.append(OmegaConf.create(dict(base)))
    if yaml_file is not None:
        layers.append(_read_yaml(Path(yaml_file)))
    if overrides:
        dotlist = [normalise_override(item) for item in overrides]
        try:
            layers.append(OmegaConf.from_dotlist(dotlist))
        except OmegaConfBaseException as error:
            raise VislabError(f"cannot read overrides {' '.join(overrides)!r}: {_first_line(error)}") from None
    try:
        merged = OmegaConf.merge(*layers)
        config = OmegaConf.to_object(merged)
    except ConfigKeyError as error:
        key = str(error.full_key or error.key)
        valid = config_keys(cls)
        hint = did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"
        raise VislabError(f"unknown config key {key!r}{hint}") from None
    except ValidationError as error:
        key = str(error.full_key or error.key)
        raise VislabError(f"config key {key!r}: {_first_line(error)}") from None
    except OmegaConfBaseException as error:
        raise VislabError(f"bad config: {_first_line(error)}") from None
    return config  # type: ignore[return-value]


def normalise_override(item: str) -> str:
    """'--model-name=Q1_4' -> 'model_name=Q1_4'; the key's dashes become underscores."""
    key, sep, value = item.removeprefix("--").partition("=")
    if not sep:
        raise VislabError(f"override {item!r} has no value; write --{key}=VALUE")
    return f"{key.replace('-', '_')}={value}"


def split_overrides(argv: Sequence[str]) -> list[str]:
    """Command-line words -> ['key=value', ...]. Accepts `--key=value`, `--key value`, and a
    bare `--flag` (meaning true)."""
    items: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("--") or word == "--":
            raise VislabError(f"unexpected argument {word!r}; config keys are given as --key=value")
        if "=" in word:
            items.append(word)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            items.append(f"{word}={argv[i + 1]}")
            i += 1
        else:
            items.append(f"{word}=true")
        i += 1
    return items


def to_dict(config: object) -> dict[str, Any]:
    """A config as plain, YAML-safe containers (for config.yaml and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def to_yaml(config: object) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def config_keys(cls: type) -> list[str]:
    """Every dotted key of a config class, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    keys = []
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            keys += [f"{field.name}.{key}" for key in config_keys(kind)]
        else:
            keys.append(field.name)
    return keys


# ---------------------------------------------------------------------------------------------
# `vislab config STUDY`: the defaults as commented YAML, comments read from the source


def commented_yaml(config: object, indent: int = 0) -> str:
    """The config as YAML with each field's source comment above it."""
    comments = field_comments(type(config))
    lines = []
    pad = " " * indent
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        comment = comments.get(field.name)
        if comment:
            lines.append(f"{pad}# {comment}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{field.name}:")
            lines.append(commented_yaml(value, indent + 2).rstrip("\n"))
        else:
            plain = to_dict(config)[field.name]
            if isinstance(plain, (list, tuple)):  # short lists read best inline: widths: [64, 128]
                text = f"{field.name}: {yaml.safe_dump(list(plain), default_flow_style=True).strip()}"
            else:
                text = yaml.safe_dump({field.name: plain}, default_flow_style=False).strip()
            lines.append(pad + text)
    return "\n".join(lines) + "\n"


def field_comments(cls: type) -> dict[str, str]:
    """{field: comment} from `name: type = default  # comment` lines of cls and its bases."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        source = inspect.cleandoc("\n" + source) if source.startswith((" ", "\t")) else source
        by_line = {tok.start[0]: tok.string.lstrip("# ").rstrip()
                   for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                   if tok.type == tokenize.COMMENT}
        for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                comment = by_line.get(node.end_lineno or node.lineno)
                if comment:
                    comments[node.target.id] = comment
    return comments


# ---------------------------------------------------------------------------------------------


def _read_yaml(path: Path):
    if not path.is_file():
        raise VislabError(f"config file {path} not found")
    try:
        loaded = OmegaConf.load(path)  # a safe YAML loader: no Python objects
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as error:
        raise VislabError(f"{path}: not valid YAML ({_first_line(error)})") from None
    if not isinstance(loaded, Mapping) and OmegaConf.is_list(loaded):
        raise VislabError(f"{path}: a config file must be a mapping of keys to values, not a list")
    return loaded


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
