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
import math
import re
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


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true", "auto")


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """Keys every study has."""

    data_root: str = ""  # data folder laid out like shared/data ('' = $VISLAB_DATA, else ./data; 'builtin' = small generated data)
    seed: int = 0  # seeds weights, splits, batch order and augmentation
    epochs: int = 10  # training epochs (an upper bound when early stopping is on)
    batch_size: int = 128  # examples per optimisation step, over all processes
    num_threads: int = 0  # CPU threads for torch (0 = torch's default, one per core)
    out: str = "runs"  # run folders go to <out>/<study>/<UTC time>-<name>/
    precision: str = "32-true"  # '32-true', 'bf16-mixed' (bf16 autocast), or 'auto' (bf16-mixed where the GPU or CPU has bf16 arithmetic, else 32-true)
    accelerator: str = "auto"  # 'auto' (a GPU when there is one), 'cpu' or 'cuda'
    devices: int = 1  # processes (one per device) for distributed training
    strategy: str = "auto"  # Lightning strategy: 'auto', 'ddp', ...
    num_nodes: int = 1  # machines for distributed training
    deterministic: bool = False  # force deterministic kernels (slower; exact reruns on GPU)
    logger: str = "none"  # 'tensorboard': per-epoch metrics also to <run>/tensorboard (pip install tensorboard); 'none'

    def __post_init__(self) -> None:
        one_of("precision", self.precision, PRECISIONS)
        in_range("seed", self.seed, 0, 2**63 - 1)  # what torch.manual_seed takes
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


def check_lr_scaling(scaling: str, reference_batch_size: int) -> None:
    """The lr_scaling / lr_batch_size pair of a study that trains with one learning rate."""
    one_of("lr_scaling", scaling, ("none", "linear", "sqrt"))
    if scaling != "none" and reference_batch_size < 1:
        raise VislabError(f"config key 'lr_batch_size': lr_scaling={scaling} needs the batch size the lr "
                          "was tuned for; set lr_batch_size")


# ---------------------------------------------------------------------------------------------
# Layering


def load_config(
    cls: type[C],
    *,
    yaml_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
    base_source: str = "the saved config",
) -> C:
    """Build `cls` from its defaults, then `base` (e.g. a checkpoint's config), then a YAML
    file, then `key=value` overrides. Raises VislabError on unknown keys, wrong types or
    NaN/Inf values, naming the layer (file) the bad value came from."""
    schema = OmegaConf.structured(cls)
    OmegaConf.set_readonly(schema, False)  # frozen dataclasses make it read-only; we merge into it
    layers: list[tuple[str, Any]] = []  # (where the values come from, values)
    if base is not None:
        if not isinstance(base, Mapping):
            raise VislabError(f"{base_source}: holds a {type(base).__name__}, not a mapping of config keys")
        layers.append((base_source, _create(base, base_source)))
    if yaml_file is not None:
        layers.append((str(yaml_file), _read_yaml(Path(yaml_file))))
    if overrides:
        dotlist = [normalise_override(item) for item in overrides]
        _refuse_repeated_keys(dotlist)
        try:
            layers.append(("the command line", OmegaConf.from_dotlist(dotlist)))
        except OmegaConfBaseException as error:
            raise VislabError(f"cannot read overrides {' '.join(overrides)!r}: {_first_line(error)}") from None
    merged = schema
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as error:
            key = str(error.full_key or error.key)
            valid = config_keys(cls)
            hint = did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"
            raise VislabError(f"{_where(source)}unknown config key {key!r}{hint}") from None
        except ValidationError as error:
            key = str(error.full_key or error.key)
            raise VislabError(f"{_where(source)}config key {key!r}: {_first_line(error)}") from None
        except OmegaConfBaseException as error:
            raise VislabError(f"{_where(source)}bad config: {_first_line(error)}") from None
    for key, value in _leaves(OmegaConf.to_container(merged)):
        if isinstance(value, float) and not math.isfinite(value):
            raise VislabError(f"{_where(_source_of(key, layers))}config key {key!r}: {value} is not a finite "
                              "number; give a real value")
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise VislabError(f"bad config: {_first_line(error)}") from None
    except VislabError as error:  # a study's __post_init__ check: name where the value came from
        named = re.match(r"config keys? '([^']+)'", str(error))
        source = _source_of(named.group(1), layers) if named else None
        if source is None:
            raise
        raise VislabError(f"{_where(source)}{error}") from None
    return config  # type: ignore[return-value]


def _where(source: str | None) -> str:
    """'my.yaml: ' for a file, '' for the command line (the user just typed it)."""
    return "" if source in (None, "the command line") else f"{source}: "


def _leaves(container: object, prefix: str = "") -> Iterable[tuple[str, object]]:
    if isinstance(container, Mapping):
        for key, value in container.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(container, (list, tuple)):
        for value in container:
            yield from _leaves(value, prefix)
    else:
        yield prefix.rstrip("."), container


def _source_of(key: str, layers: Sequence[tuple[str, Any]]) -> str | None:
    """The last layer that sets dotted `key`, or None when it is a default."""
    for source, layer in reversed(layers):
        if OmegaConf.select(layer, key, default=_MISSING) is not _MISSING:
            return source
    return None


_MISSING = object()
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _refuse_repeated_keys(dotlist: Sequence[str]) -> None:
    """`--epochs=2 ... --epochs=3` is a mistake, not a request for 3: say so."""
    seen: dict[str, str] = {}
    for item in dotlist:
        key = item.partition("=")[0]
        if key in seen:
            raise VislabError(f"config key {key!r} is given twice on the command line "
                              f"({seen[key]}, {item}); give it once")
        seen[key] = item


def normalise_override(item: str) -> str:
    """'--model-name=Q1_4' -> 'model_name=Q1_4'; the key's dashes become underscores."""
    key, sep, value = item.removeprefix("--").partition("=")
    if not sep:
        raise VislabError(f"override {item!r} has no value; write --{key}=VALUE")
    if not _KEY.fullmatch(key.replace("-", "_")):
        raise VislabError(f"override {item!r}: {key!r} is not a config key; write --KEY=VALUE "
                          "(nested keys dotted: --model.dropout=0.3)")
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


def read_yaml_file(path: Path) -> dict[str, Any]:
    """A YAML file of config values as a dict, read safely: UTF-8 text, a safe loader (no
    Python objects), no duplicate keys, no anchors/aliases (a few lines of aliases can expand
    to billions of values). Any problem is a one-line VislabError naming file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VislabError(f"config file {path} not found") from None
    except (OSError, ValueError) as error:
        raise VislabError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise VislabError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise VislabError(f"{path}:{event.start_mark.line + 1}: YAML anchors and aliases (*name) are "
                                  "not allowed in a config; write the values out")
            depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
            if depth > _MAX_DEPTH:  # the loader recurses per level: refuse before it overflows
                raise VislabError(f"{path}:{event.start_mark.line + 1}: nested more than {_MAX_DEPTH} levels "
                                  "deep; a config is a few levels of keys")
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or _first_line(error)
        raise VislabError(f"{where}: not valid YAML ({problem})") from None
    if loaded is None:  # an empty file (or only comments): the defaults
        return {}
    if not isinstance(loaded, Mapping):
        raise VislabError(f"{path}: a config file must be a mapping of keys to values, "
                          f"not a {type(loaded).__name__}")
    return dict(loaded)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the safe loader itself refuses an unhashable key, with its line
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; give it once", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_MAX_DEPTH = 32


def _read_yaml(path: Path):
    return _create(read_yaml_file(path), str(path))


def _create(values: Mapping[str, Any], source: str):
    for key, value in _leaves(values):
        if isinstance(value, str) and "${" in value:  # OmegaConf would resolve it (env vars, ...)
            raise VislabError(f"{source}: config key {key!r}: interpolations like ${{...}} are not "
                              "supported in config files; write the value out")
    try:
        return OmegaConf.create(dict(values))
    except OmegaConfBaseException as error:  # e.g. a key that is null or a list
        raise VislabError(f"{source}: bad config ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
