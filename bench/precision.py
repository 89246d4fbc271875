"""Precision and layout (figure 6): one training step of each study's default model in fp32,
under bf16 autocast, and fp32 with channels_last (NHWC) model and inputs.

    python -m bench precision            # each study's batch size: a few minutes on 2 cores
    python -m bench precision --quick    # batches of 8

A step is forward, backward and an SGD update, on random inputs of the study's shapes (the
weights do not change the speed). Figure = fp32 s / variant s (> 1: the variant is faster);
`met` says it is faster. Whether accuracy holds is for the study's own benchmark: a layout
change computes the same thing, bf16 does not. On a CPU without AMX (no native bf16 matrix
units), bf16 autocast is expected to be slower, and channels_last only helps convolutions.
"""

from __future__ import annotations

from bench._common import DEFAULT_MODELS, alternate, default_model, ratio_row, training_step

STEPS = 2  # steps per timed repeat (non-quick)


def run(quick: bool) -> list[dict]:
    rows = []
    for study, (name, batch) in DEFAULT_MODELS.items():
        batch = 8 if quick else batch
        steps = 1 if quick else STEPS
        variants = {}
        for variant, settings in (("fp32", {}), ("bf16", {"precision": "bf16"}),
                                  ("channels_last", {"channels_last": True})):
            model, inputs, loss = default_model(study, batch)
            step = training_step(model, inputs, loss, **settings)
            variants[variant] = (lambda step=step: [step() for _ in range(steps)])
        seconds = alternate(variants)
        what = f"{name} ({study}), batch {batch}, {steps} step(s) per repeat: "
        for variant, label in (("bf16", "bf16 autocast"), ("channels_last", "channels_last")):
            rows.append(ratio_row(f"precision: {name} {label} speed-up over fp32", seconds[variant], seconds["fp32"],
                                  target=1.0, what=what, note=f"ours = {label}, baseline = fp32"))
    return rows
