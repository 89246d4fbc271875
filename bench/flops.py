"""Distance to the machine's limit (figure 8): achieved FLOP/s of each study's default model's
training step as a share of this CPU's fp32 matrix-multiply peak, measured in the same run.

    python -m bench flops            # each study's batch size: a couple of minutes on 2 cores
    python -m bench flops --quick    # batches of 8, a smaller matmul

FLOPs of one step (forward and backward: convolutions and matrix multiplies) are counted with
`torch.utils.flop_counter.FlopCounterMode`; the step (with its SGD update) is timed as in
`precision`. The peak is the best of the repeated timings of an fp32 n x n matmul (2 n^3 FLOPs)
with the same threads. Figure = achieved / peak; the issue aims for >= 0.40.
"""

from __future__ import annotations

import statistics

import torch

from bench._common import DEFAULT_MODELS, REPEATS, alternate, default_model, row, spread, timed, training_step


def matmul_peak(size: int, repeats: int = REPEATS) -> list[float]:
    """FLOP/s of fp32 (size x size) @ (size x size), one value per repeat."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    return [2 * size**3 / timed(lambda: torch.mm(a, b)) for _ in range(repeats)]


def step_flops(model, inputs, loss) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss(model(*inputs)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run(quick: bool) -> list[dict]:
    size = 512 if quick else 2048
    peaks = matmul_peak(size, repeats=REPEATS if quick else 2 * REPEATS)
    peak = max(peaks)
    rows = [row(f"flops: fp32 matmul {size}x{size} peak", "GFLOP/s", figure=peak / 1e9,
                note=f"best of {len(peaks)}; median {statistics.median(peaks) / 1e9:.4g}",
                min=min(peaks) / 1e9, max=max(peaks) / 1e9, repeats=len(peaks))]
    for study, (name, batch) in DEFAULT_MODELS.items():
        batch = 8 if quick else batch
        model, inputs, loss = default_model(study, batch)
        flops = step_flops(model, inputs, loss)
        seconds = alternate({"step": training_step(model, inputs, loss)})["step"]
        shares = [flops / s / peak for s in seconds]
        figures = spread(shares)
        achieved = flops / statistics.median(seconds)
        rows.append(row(f"flops: {name} ({study}) training step, share of matmul peak", "share",
                        figure=figures["figure"], baseline=peak / 1e9, ratio=figures["figure"], target=0.40,
                        min=figures["min"], max=figures["max"], repeats=figures["repeats"],
                        note=f"batch {batch}: {flops / 1e9:.3g} GFLOP per step in "
                             f"{statistics.median(seconds):.4g} s = {achieved / 1e9:.3g} GFLOP/s; "
                             f"baseline = the peak in GFLOP/s"))
    return rows
