"""A registry of models by name, after timm's and torchvision's `register_model`.

A model is a plain `nn.Module`; a variant is a small function returning one, decorated with
`@register_model(study=..., input_shape=...)`. The registry knows each model's study and
input shape so that `vislab models` can count parameters and multiply-accumulates.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vislab.errors import VislabError, did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    study: str
    input_shape: tuple[int, ...]  # one input, without the batch dimension, e.g. (3, 32, 32)
    summary: str  # first line of the builder's docstring
    example: Callable[[int], tuple[torch.Tensor, ...]] | None = None  # batch -> forward args

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Arguments for one forward call: random inputs of `input_shape` unless the model
        registered its own (a Siamese net takes two images, a conditional generator labels)."""
        if self.example is not None:
            return self.example(batch)
        return (torch.randn(batch, *self.input_shape),)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    *,
    study: str,
    input_shape: tuple[int, ...],
    name: str | None = None,
    example: Callable[[int], tuple[torch.Tensor, ...]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under `name` (default: the function's name).

    `example(batch)` returns forward arguments when one random tensor of `input_shape` is
    not what the model takes (used by the forward/backward test and the MAC counter).
    """

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or build.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        summary = (build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else ""
        _REGISTRY[key] = ModelEntry(key, build, study, tuple(input_shape), summary, example)
        return build

    return decorator


def model_entry(name: str) -> ModelEntry:
    _import_all()
    if name not in _REGISTRY:
        raise VislabError(f"unknown model {name!r}{did_you_mean(name, _REGISTRY)} "
                          "(`vislab models` lists them all)")
    return _REGISTRY[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model `name`; keyword arguments go to its builder."""
    return model_entry(name).build(**kwargs)


def list_models(study: str | None = None, pattern: str = "*") -> list[str]:
    """Registered names, in registration order, filtered by study and a glob pattern."""
    _import_all()
    return [n for n, e in _REGISTRY.items()
            if (study is None or e.study == study) and fnmatch.fnmatchcase(n, pattern)]


def _import_all() -> None:
    # Importing vislab.models registers every model module beside this one.
    import vislab.models  # noqa: F401


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward call, counted by torch's own flop counter
    (matmuls and convolutions; a MAC is two FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    model.train(was_training)
    return counter.get_total_flops() // 2
