"""Loading checkpoints safely (weights_only=True) and checking that two of them can work together."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import torch

from .cfg_ddpm import ConditionalDDPMModule
from .classifier import EvalClassifierModule, NoisyClassifierModule
from .ddpm import DDPMModule

# the `kind` hyperparameter every checkpoint carries -> the class it was trained as
MODULES = {module.kind: module
           for module in (DDPMModule, ConditionalDDPMModule, NoisyClassifierModule, EvalClassifierModule)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, of the wrong kind or incompatible."""


def read_checkpoint(path) -> dict:
    """torch.load with weights_only=True, turning every failure into a CheckpointError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (pass the .ckpt written by guidelab-train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused by torch.load(weights_only=True): it holds objects other than tensors and plain "
            f"containers, which could run code when loaded. Re-save it with guidelab-train. ({str(err).splitlines()[0]})"
        ) from err
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(f"{path} is corrupted or truncated and cannot be read: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path} is not a guidelab checkpoint (no state_dict / hyper_parameters)")
    kind = ckpt["hyper_parameters"].get("kind")
    if kind not in MODULES:
        raise CheckpointError(f"{path} is not a guidelab checkpoint: unknown kind {kind!r} (expected one of {sorted(MODULES)})")
    return ckpt


def load_module(path, kind: str | tuple[str, ...] | None = None, map_location="cpu"):
    """Rebuild the LightningModule saved in `path` (EMA weights for a DDPM trained with EMA), in eval mode."""
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and hp["kind"] not in kinds:
        raise CheckpointError(f"{path} holds a {hp['kind']!r} model, but a {' or '.join(kinds)} checkpoint is needed here")
    cls = MODULES[hp["kind"]]
    hp["compile"] = False
    # saved keys the constructor does not take (kind; noisy in older checkpoints) are not arguments
    module = cls(**{k: v for k, v in hp.items() if k in constructor_parameters(cls)})
    state = ckpt["state_dict"]
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the network described in its own config: {err}") from err
    module.checkpoint_path = str(path)
    return module.to(map_location).eval().requires_grad_(False)


def constructor_parameters(cls) -> set[str]:
    """The keyword names `cls(...)` accepts, following `**settings` into the base classes' constructors."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_compatible(reference, other, *, keys=("schedule", "image_shape", "num_classes")) -> None:
    """Raise CheckpointError naming both sides for every metadata key on which two modules disagree."""
    ref, oth = reference.meta, other.meta
    ref_name = f"{ref['kind']} ({getattr(reference, 'checkpoint_path', 'in memory')})"
    oth_name = f"{oth['kind']} ({getattr(other, 'checkpoint_path', 'in memory')})"
    problems = []
    for key in keys:
        a, b = ref[key], oth[key]
        if key == "schedule":
            for field in sorted(set(a) | set(b)):
                if a.get(field) != b.get(field):
                    problems.append(f"schedule.{field}: {ref_name} has {a.get(field)!r}, {oth_name} has {b.get(field)!r}")
        elif a != b:
            problems.append(f"{key}: {ref_name} has {a!r}, {oth_name} has {b!r}")
    if problems:
        raise CheckpointError("incompatible checkpoints:\n  " + "\n  ".join(problems))
