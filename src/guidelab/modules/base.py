"""What the DDPM and classifier modules share: building the net, the schedule, the optimizer, metadata.

The fast training path lives here and is the default on CUDA (`compile: auto`, `channels_last: auto`):
the net compiled in place (`nn.Module.compile`, so state_dict keys do not change; on one CUDA device with CUDA
graphs, torch.compile's "reduce-overhead" mode), channels_last memory, fused AdamW, gradient clipping by one
foreach kernel and a finite-loss check that reads the device only every `finite_check_every_n_steps` steps.
Validation pads its last, partial batch for a compiled net (`forward_one_shape`), so the net compiles one
validation graph, not a second, dynamic one.
"""

from __future__ import annotations

import math

import hydra.utils
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.strategies import ParallelStrategy
from pytorch_lightning.utilities import rank_zero_info

from guidelab.diffusion import NoiseSchedule

AUTO = "auto"
# fused AdamW kernels exist for these devices (torch >= 2.4 for CPU)
FUSED_ADAMW_DEVICES = ("cuda", "cpu", "mps", "xpu")
# torch.compile modes `compile` may name (on on every device; true uses "default", "auto" see compile_mode)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# those of them whose compiled calls replay CUDA graphs on a CUDA device (torch.compile's docs)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def plain(value):
    """Hydra containers to plain Python, so checkpoints load with weights_only=True."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return list(value)
    return value


def build_net(net: dict, image_shape, num_classes: int | None = None) -> torch.nn.Module:
    """Instantiate a `_target_` net config, filling in the data's shape (and class count) unless set."""
    channels, height, width = image_shape
    if height != width:
        raise ValueError(f"nets take square images, got image_shape={list(image_shape)}")
    kwargs = {"image_size": height, "in_channels": channels}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    kwargs = {k: v for k, v in kwargs.items() if k not in net}
    return hydra.utils.instantiate(net, **kwargs, _convert_="all")


def resolve_auto(value, device: torch.device, name: str) -> bool:
    """True/False as given; "auto" means on for CUDA devices. Anything else is a config error."""
    if isinstance(value, bool):
        return value
    if value == AUTO:
        return device.type == "cuda"
    raise ValueError(f"{name} must be true, false or {AUTO!r} (on for CUDA), got {value!r}")


def is_compiled(net: torch.nn.Module) -> bool:
    """Whether `net.compile()` ran: nn.Module.compile keeps the compiled call in a private attribute, read here
    only (torch has no public accessor)."""
    return getattr(net, "_compiled_call_impl", None) is not None


def graphs_replay(mode: str | None, device: torch.device) -> bool:
    """Whether a net compiled in `mode` replays CUDA graphs on `device` (on other devices those modes compile
    without graphs)."""
    return device.type == "cuda" and mode in CUDA_GRAPH_MODES


def compile_mode(value, device: torch.device, *, parallel: bool = False) -> str | None:
    """The torch.compile mode `compile` asks for on `device`, or None for eager: a named mode as given, true
    "default", false None. "auto" is the fast path: on one CUDA device "reduce-overhead", whose CUDA graphs
    replay the net's forward and backward with one launch each (on an H100 it trained the CIFAR-10 preset at
    1.96x the "default" mode's rate: experiments/benchmarks/README.md); under a `parallel` strategy (DDP)
    "default", since graphs under DDP have not run on GPUs here (`compile=reduce-overhead` opts in); off
    elsewhere."""
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    try:
        on = resolve_auto(value, device, "compile")
    except ValueError:
        raise ValueError(f"compile must be true, false, {AUTO!r} (on for CUDA) or a torch.compile mode "
                         f"{list(COMPILE_MODES)}, got {value!r}") from None
    if not on:
        return None
    return "reduce-overhead" if value == AUTO and not parallel else "default"


class GuidelabModule(pl.LightningModule):
    """Base: holds `net`, the noise `schedule`, image shape and class count; AdamW with linear warmup."""

    kind: str = ""

    def __init__(self, *, net: dict, schedule: dict, image_shape, num_classes: int, lr: float, weight_decay: float,
                 warmup_steps: int, betas=(0.9, 0.999), channels_last: bool | str = False,
                 compile: bool | str = False, finite_check_every_n_steps: int = 50):
        super().__init__()
        resolve_auto(channels_last, torch.device("cpu"), "channels_last")  # bad values fail here, before any work
        compile_mode(compile, torch.device("cpu"))
        if isinstance(finite_check_every_n_steps, bool) or not isinstance(finite_check_every_n_steps, int) \
                or finite_check_every_n_steps < 1:
            raise ValueError(f"finite_check_every_n_steps must be an integer >= 1, got {finite_check_every_n_steps!r}")
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be [C, H, W], got {image_shape!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        # plain containers only, so checkpoints load with weights_only=True; subclasses add their own keys.
        # `kind` is no argument: load_module picks the class by it (modules/checkpoint.py MODULES)
        self.save_hyperparameters({"kind": self.kind, "net": plain(net), "schedule": plain(schedule),
                                   "image_shape": plain(image_shape), "num_classes": int(num_classes), "lr": lr,
                                   "weight_decay": weight_decay, "warmup_steps": warmup_steps, "betas": plain(betas),
                                   "channels_last": channels_last, "compile": compile,
                                   "finite_check_every_n_steps": finite_check_every_n_steps})
        self.schedule = NoiseSchedule.from_config(**self.hparams.schedule)
        self._channels_last = channels_last is True
        self._first_nonfinite_step: torch.Tensor | None = None  # device-side: -1, or the first bad step
        self._finite_checked_through = 0
        self._eval_rows = 0  # the largest batch a compiled net has met outside training
        self._compile_mode: str | None = None  # the mode the net was compiled with (None: eager, or "auto" unresolved)

    @property
    def meta(self) -> dict:
        """What two checkpoints must agree on to be used together."""
        hp = self.hparams
        return {"kind": self.kind, "schedule": dict(hp.schedule), "image_shape": list(hp.image_shape),
                "num_classes": int(hp.num_classes)}

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def _maybe_compile(self, net: torch.nn.Module) -> torch.nn.Module:
        """Apply explicit `channels_last=True` / `compile=True` now; "auto" waits for the device (setup)."""
        mode = None if self.hparams.compile == AUTO else compile_mode(self.hparams.compile, torch.device("cpu"))
        return self._apply_fast_path(net, self.hparams.channels_last is True, mode)

    def _apply_fast_path(self, net: torch.nn.Module, channels_last: bool, mode: str | None) -> torch.nn.Module:
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            self._channels_last = True
        if mode is not None and not is_compiled(net):
            net.compile(mode=mode)  # in place: parameters and state_dict keys stay those of the plain net
            self._compile_mode = mode
        return net

    def replays_cuda_graphs(self) -> bool:
        """Whether the net's compiled forward and backward replay CUDA graphs here: compiled in reduce-overhead or
        max-autotune mode (named, or "auto" resolved for one CUDA device in `setup`), on a CUDA device (on other
        devices those modes compile without graphs)."""
        return graphs_replay(self._compile_mode, self.device)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """Lightning's default (`.grad` set to None), except where CUDA graphs replay the backward and gradients
        accumulate over batches (`trainer.accumulate_grad_batches > 1`). A replayed backward writes its gradients
        into the graphs' own memory; a `.grad` that is such a buffer is overwritten by the next replay, and torch
        raises ("... output of CUDAGraphs that has been overwritten by a subsequent run") when the next batch's
        gradient is added to it. So there every parameter gets a `.grad` of its own, zeroed in place, which the
        backward adds into: the same sums, one more add per parameter and batch."""
        if not (self.replays_cuda_graphs() and self.trainer.accumulate_grad_batches > 1):
            optimizer.zero_grad()
            return
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.requires_grad and param.grad is None:
                    param.grad = torch.zeros_like(param)  # zeros_like keeps channels_last
        optimizer.zero_grad(set_to_none=False)

    def forward_one_shape(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        """`self(*inputs)`, where a compiled net outside training meets one batch size. It would recompile (a
        dynamic graph) for the last, partial validation batch; that batch is filled up to the largest one met
        so far with repeats of its last row, and the repeats' outputs are dropped. Rows do not interact (no
        batch norm, no dropout in eval), so the kept outputs are those of the unpadded batch. Eager nets and
        training steps (the DDPM's loss, shared with validation, calls this too) run as given."""
        rows = len(inputs[0])
        if self.training or not is_compiled(self.net) or rows >= self._eval_rows:
            self._eval_rows = max(self._eval_rows, rows)
            return self(*inputs)
        pad = self._eval_rows - rows
        return self(*(None if v is None else torch.cat([v, v[-1:].expand(pad, *v.shape[1:])])
                      for v in inputs))[:rows]

    def setup(self, stage: str) -> None:
        """Resolve "auto" for the device the strategy will train on, before the module moves there and
        before callbacks bind to the parameters (in their on_fit_start)."""
        hp = self.hparams
        if stage == "fit" and AUTO in (hp.channels_last, hp.compile):
            strategy = self.trainer.strategy
            device = strategy.root_device
            channels_last = resolve_auto(hp.channels_last, device, "channels_last")
            mode = compile_mode(hp.compile, device, parallel=isinstance(strategy, ParallelStrategy))
            self._apply_fast_path(self.net, channels_last, mode)
            mode = self._compile_mode  # what the net runs with (a net compiled by an earlier fit keeps its mode)
            graphs = " (CUDA graphs)" if graphs_replay(mode, device) else ""
            rank_zero_info(f"{self.kind} net on {device.type}: torch.compile "
                           f"{'off' if mode is None else repr(mode) + ' mode' + graphs}, channels_last "
                           f"{'on' if self._channels_last else 'off'} (task.module.compile={hp.compile}, "
                           f"channels_last={hp.channels_last})")

    def on_fit_start(self) -> None:
        self._first_nonfinite_step = None
        self._finite_checked_through = self.global_step

    def random_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.device if generator is None else generator.device
        return torch.randint(0, self.schedule.T, (batch,), device=device, generator=generator).to(self.device)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Record a non-finite loss on the device (no host sync). The record is read every
        `finite_check_every_n_steps` steps, at each epoch end and before every checkpoint is written,
        so no checkpoint ever holds weights trained on a non-finite loss."""
        step = self.global_step
        if self._first_nonfinite_step is None or self._first_nonfinite_step.device != loss.device:
            self._first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._first_nonfinite_step < 0)
        self._first_nonfinite_step = torch.where(bad, step, self._first_nonfinite_step)
        if (step + 1) % self.hparams.finite_check_every_n_steps == 0:
            self.raise_if_nonfinite()

    def raise_if_nonfinite(self) -> None:
        """The one host sync of the finite check: raise FloatingPointError naming the step (range)."""
        if self._first_nonfinite_step is None:
            return
        first = self._first_nonfinite_step
        flag = (first >= 0).float()
        if self._trainer is not None and self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag, reduce_op="sum")  # every rank stops together
        checked_from, self._finite_checked_through = self._finite_checked_through, self.global_step
        if flag.item() > 0:
            where = f"at global step {int(first)}" if int(first) >= 0 else "on another rank"
            raise FloatingPointError(
                f"non-finite training loss {where} (checked steps {checked_from}..{self.global_step}): stopping. "
                "The last good checkpoint is untouched; lower lr, enable gradient clipping or check the data."
            )

    def on_train_epoch_end(self) -> None:
        self.raise_if_nonfinite()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.raise_if_nonfinite()  # never save weights trained on a non-finite loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip here rather than in Lightning's precision plugin, which refuses fused optimizers under mixed
        precision. bf16 and fp32 grads are unscaled already; under fp16's GradScaler they are unscaled first."""
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)  # Lightning leaves fused optimizers' grads scaled; the step then skips it
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val, foreach=True)  # no host sync
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val, foreach=True)
        else:
            raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")

    def configure_optimizers(self):
        hp = self.hparams
        fused = self.device.type in FUSED_ADAMW_DEVICES
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                                fused=fused)
        warmup = max(int(hp.warmup_steps), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
