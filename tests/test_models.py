"""Every registered model: a forward and a backward pass on random input, finite gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vislab.errors import VislabError
from vislab.models import create_model, list_models, model_entry, register_model
from vislab.models.registry import count_macs, count_parameters


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    entry = model_entry(name)
    model = create_model(name)
    model.train()
    outputs = model(*entry.example_inputs(2))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    loss = sum(out.float().pow(2).mean() for out in outputs if out.is_floating_point())
    loss.backward()
    assert all(torch.isfinite(out).all() for out in outputs if out.is_floating_point())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert count_parameters(model) > 0


def test_registry_refuses_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="twice"):
        register_model(study="cnn", input_shape=(3, 32, 32), name="Q1_1")(lambda: nn.Identity())
    with pytest.raises(VislabError, match=r"unknown model 'Q1_1x'; did you mean: Q1_1\b"):
        create_model("Q1_1x")


def test_macs_of_the_tutorial_net():
    # conv1: 6*28*28*75 + conv2: 16*10*10*150 + fc: 400*120 + 120*84 + 84*10
    expected = 6 * 28 * 28 * 75 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert count_macs(create_model("Q1_1"), (torch.zeros(1, 3, 32, 32),)) == expected
