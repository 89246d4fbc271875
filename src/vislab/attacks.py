"""Adversarial examples: functions of (model, x, y, ...) -> x_adv.

Inputs are images in [0, 1] (B, C, H, W); the model takes them as they are (normalisation
lives inside the model, see `vislab.models.imbalance.Normalized`), so an epsilon is in pixel
units: 8/255 means eight grey levels. Every attack keeps x_adv inside [0, 1]. The model
should be in eval mode; it is not changed (gradients are taken with respect to the input only).

- `fgsm`: one signed-gradient step (Goodfellow et al. 2015), untargeted or targeted;
- `pgd`: projected gradient descent in the L-inf ball (Madry et al. 2018), random start;
- `optimized_noise`: the report's targeted noise, argmin_d CE(f(x + d), target) + C |d|_1
  from d = 0, solved by proximal gradient (a gradient step on the cross-entropy, then the
  soft-threshold that is the proximal map of the L1 term), so small entries of d are set to
  exactly zero and the noise stays small and sparse. Plain Adam on d moves every pixel by
  about its step size at every iteration, which is why the report's noise was visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d CE_sum / d x, logits): the summed loss, so that each sample's gradient is its own."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad, logits.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False) -> torch.Tensor:
    """x + eps * sign(grad CE(f(x), y)); targeted: y is the target and the step goes down."""
    grad, _ = _input_gradient(model, x, y)
    direction = -grad.sign() if targeted else grad.sign()
    return (x + eps * direction).clamp(0, 1).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`steps` signed-gradient steps of size `alpha` (default 2.5 eps / steps), each projected
    back into the L-inf ball of radius eps around x and into [0, 1]."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        grad, _ = _input_gradient(model, x_adv, y)
        step = -grad.sign() if targeted else grad.sign()
        x_adv = x_adv + alpha * step
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


@dataclass
class NoiseResult:
    x_adv: torch.Tensor  # (B, C, H, W) in [0, 1]
    success: torch.Tensor  # (B,) bool: f(x_adv) predicts the target
    steps: torch.Tensor  # (B,) steps until success (or the budget)


def optimized_noise(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    l1_weight: float = 0.05,
    step_size: float = 1 / 255,
    steps: int = 300,
    stop_on_success: bool = True,
) -> NoiseResult:
    """Targeted noise d from d = 0 by proximal gradient on CE(f(x + d), target) + C |d|_1.

    Each step: d <- soft_threshold(d - eta * g, eta * C * |g|_inf), where g is the gradient of
    the cross-entropy and eta = step_size / |g|_inf per sample, so that the largest entry of d
    moves by `step_size` (pixels) whatever the scale of the model's gradients, and `l1_weight`
    C is the L1 weight relative to that largest gradient entry (0 <= C < 1): an entry whose
    gradient is below C * |g|_inf is pulled back to zero. x + d is kept in [0, 1]. With
    `stop_on_success`, a sample's d is frozen at the first step where f predicts the target.
    """
    if not 0 <= l1_weight < 1:
        raise ValueError(f"l1_weight {l1_weight} must be in [0, 1): it is relative to the largest gradient entry")
    x = x.detach()
    delta = torch.zeros_like(x)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    used = torch.full((x.shape[0],), steps, dtype=torch.long, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)  # samples still being optimised
    for step in range(steps + 1):
        x_a, d_a, t_a = x[active], delta[active], target[active]
        grad, logits = _input_gradient(model, x_a + d_a, t_a)
        hit = logits.argmax(1) == t_a
        used[active[hit & ~done[active]]] = step
        done[active[hit]] = True
        if stop_on_success:  # a success is frozen: drop it from the batch
            grad, x_a, d_a, keep = grad[~hit], x_a[~hit], d_a[~hit], active[~hit]
        else:
            keep = active
        if step == steps or len(keep) == 0:
            break
        scale = grad.flatten(1).abs().amax(1).clamp_min(1e-20).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        moved = d_a - step_size * grad / scale
        moved = moved.sign() * (moved.abs() - step_size * l1_weight).clamp_min(0)  # prox of the L1 term
        delta[keep] = (x_a + moved).clamp(0, 1) - x_a  # the valid image range
        active = keep
    x_adv = (x + delta).clamp(0, 1).detach()
    if not stop_on_success:  # success is where the final noise lands, not where it passed
        with torch.no_grad():
            done = model(x_adv).argmax(1) == target
    return NoiseResult(x_adv, done, used)


def success_by_pair(source: torch.Tensor, target: torch.Tensor, success: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) share of successful attacks per (source class, target class); NaN
    where no attack was made (the diagonal)."""
    table = torch.full((classes, classes), float("nan"))
    for s in range(classes):
        for t in range(classes):
            chosen = (source == s) & (target == t)
            if chosen.any():
                table[s, t] = success[chosen].float().mean()
    return table
