"""Attacks: FGSM against a hand-computed example, PGD's constraints, the optimised noise, and
agreement with torchattacks (the reference implementation) on the same model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vislab import attacks


class Linear2(nn.Module):
    """f(x) = W x for a 1x1x2 'image': gradients a reader can compute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, -2.0], [-1.0, 3.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_fgsm_matches_a_hand_computed_example() -> None:
    # x = (0.5, 0.5), y = 0: logits (-0.5, 1.0), p = softmax; dCE/dx = W^T (p - e0)
    # = (p0 - 1 - p1, -2 (p0 - 1) + 3 p1) = (negative, positive), so the step is (-eps, +eps).
    model = Linear2()
    x = torch.tensor([[[[0.5, 0.5]]]])
    p = torch.softmax(torch.tensor([-0.5, 1.0]), 0)
    grad = torch.tensor([[1.0, -1.0], [-2.0, 3.0]]) @ (p - torch.tensor([1.0, 0.0]))
    assert grad[0] < 0 < grad[1]
    out = attacks.fgsm(model, x, torch.tensor([0]), 0.1)
    torch.testing.assert_close(out, torch.tensor([[[[0.4, 0.6]]]]))
    # targeted at class 1: W^T (p - e1) = (2 p0, -2 p0 + 3 p1 - 3) = (+, -); the step goes down it
    out = attacks.fgsm(model, x, torch.tensor([1]), 0.1, targeted=True)
    torch.testing.assert_close(out, torch.tensor([[[[0.4, 0.6]]]]))
    # the valid range wins over the step
    out = attacks.fgsm(model, torch.tensor([[[[0.05, 0.98]]]]), torch.tensor([0]), 0.1)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 1.0]]]]))


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 3)).eval()


def test_pgd_stays_in_the_ball_and_the_image_range() -> None:
    model = small_cnn()
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 3, (16,))
    eps = 8 / 255
    x_adv = attacks.pgd(model, x, y, eps, steps=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean_loss = nn.functional.cross_entropy(model(x), y)
        adv_loss = nn.functional.cross_entropy(model(x_adv), y)
    assert adv_loss > clean_loss  # it went uphill


def test_optimized_noise_reaches_the_target_and_the_l1_term_makes_it_sparse() -> None:
    model = small_cnn(1)
    x = torch.rand(12, 3, 8, 8)
    with torch.no_grad():
        target = (model(x).argmax(1) + 1) % 3
    dense = attacks.optimized_noise(model, x, target, l1_weight=0.0, step_size=2 / 255, steps=200)
    sparse = attacks.optimized_noise(model, x, target, l1_weight=0.1, step_size=2 / 255, steps=200)
    for result in (dense, sparse):
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
        with torch.no_grad():
            hit = model(result.x_adv).argmax(1) == target
        assert torch.equal(hit, result.success)
    assert sparse.success.float().mean() >= 0.9
    unchanged = lambda r: ((r.x_adv - x).abs() < 1e-7).float().mean()  # noqa: E731
    assert unchanged(sparse) > unchanged(dense)


def test_success_by_pair_is_the_share_per_source_and_target() -> None:
    table = attacks.success_by_pair(torch.tensor([0, 0, 1, 2]), torch.tensor([1, 1, 0, 0]),
                                    torch.tensor([True, False, True, False]), 3)
    assert table[0, 1] == 0.5 and table[1, 0] == 1.0 and table[2, 0] == 0.0
    assert torch.isnan(table[0, 0]) and torch.isnan(table[0, 2])


def test_fgsm_and_pgd_agree_with_torchattacks() -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model = small_cnn(2)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)  # attack correct predictions: success = the label changes
    eps = 4 / 255
    ours = attacks.fgsm(model, x, y, eps)
    theirs = torchattacks.FGSM(model, eps=eps)(x, y)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    ours = attacks.pgd(model, x, y, eps, alpha=1 / 255, steps=10, random_start=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=1 / 255, steps=10, random_start=False)(x, y)
    with torch.no_grad():
        ours_rate = (model(ours).argmax(1) != y).float().mean().item()
        theirs_rate = (model(theirs).argmax(1) != y).float().mean().item()
    assert 0 < ours_rate and abs(ours_rate - theirs_rate) <= 0.01
    # with random starts the draws differ, but the success rates still agree
    ours = attacks.pgd(model, x, y, eps, alpha=1 / 255, steps=10, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    theirs = torchattacks.PGD(model, eps=eps, alpha=1 / 255, steps=10, random_start=True)(x, y)
    with torch.no_grad():
        ours_rate = (model(ours).argmax(1) != y).float().mean().item()
        theirs_rate = (model(theirs).argmax(1) != y).float().mean().item()
    assert abs(ours_rate - theirs_rate) <= 0.05
