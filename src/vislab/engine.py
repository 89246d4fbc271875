"""The training engine every study shares: dull and predictable on purpose.

Lightning's Fabric owns the device, precision (bf16 autocast), and distributed strategy;
this module writes the loop out: `train_one_epoch` and `evaluate`-style callbacks, called by
`fit`, which adds the side effects (metrics row, progress line, last/best checkpoint, early
stopping, resume). It never branches on which study calls it. Studies with several
optimisers (GANs, attacks) write their own loops with the same pieces.

Reproducibility: every epoch reseeds the global RNG from (seed, epoch), and batch order and
augmentation take generators from `epoch_generator(seed, epoch)`, so a run resumed from the
checkpoint of epoch k continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vislab.errors import VislabError
from vislab.runs import Run

Batch = Any
StepOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]


class TrainingDiverged(VislabError):
    """The loss became NaN or infinite."""


class RunPruned(Exception):
    """Raised by an epoch hook (a hyperparameter search) to stop a run that is not promising."""


# Called by `fit` after every epoch as hook(run, row); set with `epoch_hook` (vislab.tune prunes here).
_epoch_hook: Callable[[Run, dict[str, float]], None] | None = None


@contextlib.contextmanager
def epoch_hook(hook: Callable[[Run, dict[str, float]], None]):
    """Call `hook(run, row)` after each epoch of every `fit` inside the `with` block."""
    global _epoch_hook
    previous, _epoch_hook = _epoch_hook, hook
    try:
        yield
    finally:
        _epoch_hook = previous


def log(message: str) -> None:
    """A status line for the user (stderr: stdout is kept for the run folder's path)."""
    print(message, file=sys.stderr, flush=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


# ---------------------------------------------------------------------------------------------
# Set-up


def make_fabric(config: Any):
    """A Fabric for the config's accelerator, devices, strategy and precision, launched."""
    from lightning.fabric import Fabric

    for name in ("lightning.fabric", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    fabric = Fabric(accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
                    num_nodes=config.num_nodes, precision=resolve_precision(config.precision, config.accelerator))
    fabric.launch()
    torch.manual_seed(config.seed)
    return fabric


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """`precision`, with 'auto' made concrete: bf16 autocast where the hardware computes in bf16
    (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX, where bf16 steps measured
    1.45-1.69x faster than fp32 here), else fp32 (without those instructions bf16 autocast was
    about 10x slower than fp32 on an AVX512 CPU)."""
    if precision != "auto":
        return precision
    if accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (the avx512_bf16 or amx_bf16 flags of Linux's
    /proc/cpuinfo; elsewhere assumed absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def local_batch_size(fabric, batch_size: int) -> int:
    """This process's share of the global `batch_size` (examples per step over all processes)."""
    if batch_size % fabric.world_size:
        raise VislabError(f"batch_size {batch_size} does not split evenly over {fabric.world_size} processes; "
                          f"use a multiple of {fabric.world_size}")
    return batch_size // fabric.world_size


def scaled_lr(lr: float, *, batch_size: int, scaling: str, reference_batch_size: int) -> float:
    """The learning rate for a global `batch_size`, given one tuned at `reference_batch_size`:
    'none' keeps it, 'linear' multiplies by the ratio (Goyal et al. 2017), 'sqrt' by its root."""
    if scaling == "none":
        return lr
    ratio = batch_size / reference_batch_size
    return lr * (ratio if scaling == "linear" else math.sqrt(ratio))


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    *,
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_share: float = 0.25,
    decay: float = 1.0,
    decay_every: int = 1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """'sgd' (Nesterov momentum), 'adam' or 'adamw', with a schedule stepped once per batch:
    'onecycle' (warm up for `warmup_share` of the steps, then anneal), 'cosine', 'exponential'
    (the rate times `decay` every `decay_every` steps, smoothly), or 'constant'."""
    if name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=momentum > 0,
                                    weight_decay=weight_decay)
    elif name == "adam":
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    else:
        raise VislabError(f"unknown optimizer {name!r}; use 'sgd', 'adam' or 'adamw'")
    total_steps = max(total_steps, 1)
    if schedule == "onecycle" and lr > 0:
        # OneCycleLR divides by (warm-up steps - 1): a warm-up of exactly one step is 0/0
        # (e.g. 4 steps at 0.25); half a step more changes nothing else.
        if abs(warmup_share * total_steps - 1) < 1e-9:
            warmup_share = 1.5 / total_steps
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                        pct_start=warmup_share)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif schedule == "exponential":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: decay ** (step / decay_every))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, stream)."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 10_007 + stream) % (2**63))
    return generator


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed the global RNG (dropout, random init of anything made mid-run) for an epoch."""
    torch.manual_seed((seed * 1_000_003 + epoch * 10_007 + 999) % (2**63))


# ---------------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(
    fabric,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    training_step: Callable[[nn.Module, Batch], StepOutput],
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    description: str = "",
) -> dict[str, float]:
    """One pass over `batches`; returns the mean loss and the mean of any extra step metrics.

    `training_step(model, batch)` returns the loss, or (loss, {name: value}). A scheduler
    given here steps after every batch (one-cycle and warm-up schedules).
    """
    from tqdm.auto import tqdm

    model.train()
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    check_every = 1 if fabric.device.type == "cpu" else 50  # a finite-check syncs a GPU
    loss_sum = torch.zeros((), device=fabric.device)
    extra_sums: dict[str, float] = {}
    steps = 0
    bar = tqdm(batches, total=total, desc=description, leave=False, file=sys.stderr,
               disable=not is_tty(), dynamic_ncols=True)
    for step, batch in enumerate(bar, start=1):
        output = training_step(model, batch)
        loss, extras = output if isinstance(output, tuple) else (output, {})
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        for name, value in extras.items():
            extra_sums[name] = extra_sums.get(name, 0.0) + float(value)
        if step % check_every == 0 and not math.isfinite(loss_sum.item()):
            raise TrainingDiverged(f"training loss became {loss.item()} at step {step} of "
                                   f"{description or 'the epoch'}; lower the learning rate or check the data")
        if _StopRequest.requested:
            raise KeyboardInterrupt(f"stopped after step {step} of {description or 'the epoch'}")
        if bar.disable is False and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / steps:.4f}", refresh=False)
    bar.close()
    if steps == 0:
        raise VislabError("the training set yields no batch; it is empty or smaller than batch_size "
                          "with drop_last")
    mean_loss = float(fabric.all_reduce(loss_sum / steps, reduce_op="mean"))
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"training loss became {mean_loss} in {description or 'the epoch'}; "
                               "lower the learning rate or check the data")
    extras = {f"train_{k}": v / steps for k, v in extra_sums.items()}
    if fabric.world_size > 1:  # equal steps of equal-sized batches: the mean of the means is the mean
        extras = {k: float(fabric.all_reduce(torch.tensor(v, device=fabric.device), reduce_op="mean"))
                  for k, v in extras.items()}
    return {"train_loss": mean_loss, **extras}


class Sized:
    """An iterable with a known length, so that the progress bar can show how far an epoch is."""

    def __init__(self, iterable: Iterable[Batch], length: int) -> None:
        self.iterable, self.length = iterable, length

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self) -> int:
        return self.length


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable[Batch], forward: Callable[[nn.Module, Batch], torch.Tensor]) -> torch.Tensor:
    """Concatenated float outputs of `forward(model, batch)` over `batches`, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = [forward(model, batch).float().cpu() for batch in batches]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


# ---------------------------------------------------------------------------------------------
# Many epochs, with the side effects


@dataclass
class FitState:
    """What a checkpoint restores besides the weights."""

    epoch: int = 0  # epochs completed
    best_metric: float = math.nan
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the monitored metric last improved
    stopped_early: bool = False


class _StopRequest:
    """Set by Ctrl-C during `fit`; `train_one_epoch` stops after the step it is in."""

    requested = False


@contextlib.contextmanager
def stop_at_next_step():
    """Inside the block the first Ctrl-C (SIGINT) only asks training to stop after the current
    step, so no step or checkpoint is cut in half; a second Ctrl-C interrupts at once."""
    def handler(signum, frame) -> None:
        if _StopRequest.requested:
            raise KeyboardInterrupt
        _StopRequest.requested = True
        log("stopping after this step (Ctrl-C again to stop at once)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: keep Python's default
        yield
        return
    _StopRequest.requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _StopRequest.requested = False


def fit(*args, **kwargs) -> tuple[nn.Module, FitState]:
    """`_fit` (below), with Ctrl-C stopping at a step boundary."""
    with stop_at_next_step():
        return _fit(*args, **kwargs)


def _fit(
    fabric,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    run: Run,
    config: Mapping[str, Any],
    epochs: int,
    seed: int,
    train_batches: Callable[[int], Iterable[Batch]],
    training_step: Callable[[nn.Module, Batch], StepOutput],
    validate: Callable[[nn.Module], dict[str, float]],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scheduler_per_step: bool = False,
    monitor: str = "val_loss",
    mode: str = "min",
    patience: int = 0,
    resume: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, FitState]:
    """Train for `epochs`, validating after each; returns the Fabric-wrapped model and state.

    - `train_batches(epoch)` gives that epoch's batches (deterministic in seed and epoch);
    - `validate(model)` returns metrics including `monitor`; the model is in eval mode;
    - checkpoints/last.ckpt after every epoch, best.ckpt when `monitor` improves;
    - `patience` > 0 stops after that many epochs without improvement;
    - `resume` is a checkpoint dict from `last.ckpt`: training continues after its epoch.
    """
    raw_model, raw_optimizer = model, optimizer
    state = FitState()
    if resume is not None:
        state = _restore(resume, raw_model, raw_optimizer, scheduler)
        run.truncate_metrics(state.epoch)
        log(f"resuming after epoch {state.epoch} from {run.path}")
    model, optimizer = fabric.setup(raw_model, raw_optimizer)
    better = (lambda new, old: new < old) if mode == "min" else (lambda new, old: new > old)

    for epoch in range(state.epoch + 1, epochs + 1):
        started = time.perf_counter()
        seed_epoch(seed, epoch)
        lr = optimizer.param_groups[0]["lr"]
        row: dict[str, float] = {"epoch": epoch, "lr": lr}
        row |= train_one_epoch(fabric, model, optimizer, train_batches(epoch), training_step,
                               scheduler=scheduler if scheduler_per_step else None,
                               description=f"epoch {epoch}/{epochs}")
        if scheduler is not None and not scheduler_per_step:
            scheduler.step()
        model.eval()
        with torch.inference_mode():
            row |= validate(model)
        row["seconds"] = round(time.perf_counter() - started, 3)

        state.epoch = epoch
        current = row.get(monitor, math.nan)
        improved = math.isfinite(current) and (not math.isfinite(state.best_metric) or better(current, state.best_metric))
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = current, epoch, 0
        else:
            state.bad_epochs += 1
        state.stopped_early = patience > 0 and state.bad_epochs >= patience

        if fabric.is_global_zero:
            run.append_metrics(row)
            checkpoint = _checkpoint(raw_model, raw_optimizer, scheduler, state, config)
            run.save_checkpoint("last.ckpt", checkpoint)
            if improved or not run.checkpoint_path("best.ckpt").exists():
                run.save_checkpoint("best.ckpt", checkpoint)
            log(epoch_line(row, epochs))
        if _epoch_hook is not None:
            _epoch_hook(run, row)
        if state.stopped_early:
            log(f"early stop: {monitor} has not improved for {patience} epochs "
                f"(best {state.best_metric:.4f} at epoch {state.best_epoch})")
            break
    fabric.barrier()  # the other processes read best.ckpt next: wait until rank 0 has written it
    return model, state


def epoch_line(row: Mapping[str, float], epochs: int) -> str:
    """`epoch 3/30  train_loss 0.512  val_loss 0.498  val_acc 0.781  lr 1.0e-03  12.4 s`"""
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "lr", "seconds"):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"lr {row['lr']:.1e}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


def load_best_weights(model: nn.Module, run: Run) -> int:
    """Load best.ckpt's weights into `model` (raw or Fabric-wrapped); returns its epoch."""
    from vislab.runs import load_checkpoint

    checkpoint = load_checkpoint(run.checkpoint_path("best.ckpt"))
    unwrap(model).load_state_dict(checkpoint["model"])
    return int(checkpoint["epoch"])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a Fabric (and DDP) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """load_state_dict with a one-line error naming the first layer that does not fit, or
    that holds NaN/Inf values (a checkpoint of a diverged or tampered run)."""
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise VislabError(f"{source} holds no model weights (a mapping of layer names to tensors); "
                          "was it saved by vislab?")
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise VislabError(f"{source} does not fit the model: {detail}; was it saved for another "
                          "model_name or config?")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise VislabError(f"{source} does not fit the model: layer {key} has shape "
                              f"{tuple(state[key].shape)} in the checkpoint, {tuple(tensor.shape)} in the model")
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            raise VislabError(f"{source} has NaN or infinite values in layer {key}; use a checkpoint "
                              "saved before training diverged")
    model.load_state_dict(state)


def _checkpoint(model, optimizer, scheduler, state: FitState, config: Mapping[str, Any]) -> dict[str, Any]:
    from vislab import __version__

    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": state.epoch,
        "config": dict(config),
        "best_metric": state.best_metric,
        "fit_state": asdict(state),
        "vislab_version": __version__,
    }


def _restore(checkpoint: Mapping[str, Any], model, optimizer, scheduler) -> FitState:
    load_model_state(model, checkpoint.get("model"), "the checkpoint")
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None and checkpoint.get("scheduler") is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        return FitState(**checkpoint["fit_state"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise VislabError(f"the checkpoint does not fit this run ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); was it saved with another "
                          "optimizer or config?") from None
