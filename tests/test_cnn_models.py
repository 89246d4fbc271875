"""The cnn study's models: the report's exact parameter counts, and forward/backward for all."""

from __future__ import annotations

import pytest
import torch

from vislab.models import create_model, list_models

# Trainable parameters per variant, from the report (seeds/004); Q2_1 is derived from its
# description (Q1_1 without ReLU and max-pool: 16*24*24 = 9,216 features into FC 120-84-10).
REPORT_COUNTS = {
    "Q1_1": 62_006, "Q1_2": 37_406, "Q1_3": 81_302, "Q1_4": 6_194, "Q1_5": 61_694,
    "Q1_6": 44_028, "Q1_7": 52_202, "Q1_8": 75_762, "Q1_9": 89_918, "Q1_10": 102_922,
    "Q1_11": 429_330, "Q1_12": 44_912, "Q1_13": 36_798, "Q1_14": 43_100, "Q1_15": 49_402,
    "Q1_16": 55_704, "Q1_17": 30_044, "Q1_18": 26_943, "Q1_19": 550_570, "Q1_20": 356_810,
    "Q1_21": 164_234, "Q1_22": 105_258, "Q1_23": 960_298, "Q1_24": 960_298,
    "Q1_25": 2_141_610, "Q2_1": 1_119_926, "Q2_2": 2_618_562,
}


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(REPORT_COUNTS))
def test_report_parameter_count(name: str) -> None:
    assert trainable_parameters(create_model(name)) == REPORT_COUNTS[name]


def test_every_report_variant_is_registered() -> None:
    assert set(REPORT_COUNTS) <= set(list_models(study="cnn"))


def test_q1_23_and_q1_24_differ_only_in_layer_order() -> None:
    q23, q24 = create_model("Q1_23"), create_model("Q1_24")
    kernels = [[m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
               for net in (q23, q24)]
    assert kernels[0] != kernels[1] and sorted(kernels[0]) == sorted(kernels[1])


@pytest.mark.parametrize("name", ["Q2_1", "Q2_2"])
def test_q2_models_are_linear(name: str) -> None:
    # The report's question 2: no ReLU and no max-pool anywhere, only conv and linear layers.
    layer_types = {type(m) for m in create_model(name).modules() if not list(m.children())}
    assert layer_types == {torch.nn.Conv2d, torch.nn.Linear, torch.nn.Flatten}


@pytest.mark.parametrize("name", list_models(study="cnn"))
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.square().mean().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{pname} has a non-finite gradient"


def test_resnet_fast_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = create_model("ResNet_fast", widths=(16, 32, 64), stem_width=8).eval()
    images = torch.randn(2, 3, 32, 32)
    expected = model(images)
    model = model.to(memory_format=torch.channels_last)
    got = model(images.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
