"""Attacks (figure 3): vislab's FGSM and PGD-10 against torchattacks on the same model,
batch and epsilon.

    python -m bench attacks            # imb_resnet, 128 images: a few minutes on 2 cores
    python -m bench attacks --quick    # imb_resnet_small, 32 images

The model is the imbalance study's (the study that attacks), with its normalisation inside
(`Normalized`), untrained: speed does not depend on the weights. L-inf, eps 8/255, PGD step
2/255 with a random start, as torchattacks' defaults. Figure = torchattacks s / vislab s
(>= 1: vislab at least as fast). The note also gives the largest difference between the two
FGSM outputs (both are deterministic: 0 means the same images).
"""

from __future__ import annotations

import torch

from bench._common import alternate, ratio_row

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def run(quick: bool) -> list[dict]:
    import torchattacks

    from vislab import attacks
    from vislab.models.imbalance import Normalized
    from vislab.models.registry import model_entry
    from vislab.studies.cnn import CIFAR_MEAN, CIFAR_STD

    name, batch = ("imb_resnet_small", 32) if quick else ("imb_resnet", 128)
    torch.manual_seed(0)
    model = Normalized(model_entry(name).build(), CIFAR_MEAN, CIFAR_STD).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=generator)
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    y = torch.randint(0, classes, (batch,), generator=generator)

    theirs_fgsm = torchattacks.FGSM(model, eps=EPS)
    theirs_pgd = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    difference = (attacks.fgsm(model, x, y, EPS) - theirs_fgsm(x, y)).abs().max().item()
    what = f"{name}, {batch} images, eps 8/255: "
    fgsm = alternate({"ours": lambda: attacks.fgsm(model, x, y, EPS), "theirs": lambda: theirs_fgsm(x, y)})
    pgd = alternate({"ours": lambda: attacks.pgd(model, x, y, EPS, alpha=ALPHA, steps=STEPS, generator=generator),
                     "theirs": lambda: theirs_pgd(x, y)})
    return [
        ratio_row("attacks: FGSM, torchattacks s / vislab s", fgsm["ours"], fgsm["theirs"], target=1.0, what=what,
                  note=f"largest pixel difference between the two FGSM images: {difference:.3g}"),
        ratio_row("attacks: PGD-10, torchattacks s / vislab s", pgd["ours"], pgd["theirs"], target=1.0, what=what,
                  note="step 2/255, random start"),
    ]
