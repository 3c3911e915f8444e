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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_MAGIC = b"\x80"  # torch.save's legacy format starts with a pickle protocol opcode


def _refusal(path: Path, err: Exception) -> CheckpointError:
    """Tell an unsafe file (a pickle naming code to import) from a damaged or foreign one."""
    text = str(err)
    unsafe = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), None)
    if isinstance(err, pickle.UnpicklingError) and unsafe:
        return CheckpointError(
            f"{path} is unsafe: torch.load(weights_only=True) refused it because it names code to import "
            f"({unsafe}), which could run when loaded. Only load it if you trust its source, and re-save it "
            "with guidelab-train."
        )
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        return CheckpointError(f"{path} is empty (0 bytes): an interrupted copy or save; copy the .ckpt again")
    if head.startswith(ZIP_MAGIC):
        return CheckpointError(
            f"{path} is truncated or corrupted (its zip archive cannot be read: {text.splitlines()[0][:120]}); "
            "copy the .ckpt again or use an earlier checkpoint"
        )
    if not head.startswith(PICKLE_MAGIC):
        return CheckpointError(f"{path} is not a checkpoint file (it does not start like a torch.save file); "
                               "pass the .ckpt written by guidelab-train")
    return CheckpointError(f"{path} is corrupted and cannot be read ({text.splitlines()[0][:120] if text else type(err).__name__}); "
                           "copy the .ckpt again or use an earlier checkpoint")


def read_checkpoint(path) -> dict:
    """torch.load with weights_only=True, turning every failure into a CheckpointError that says what to do:
    missing, empty, truncated, corrupted, not a checkpoint, unsafe (names code to import), or foreign
    (a torch file that guidelab-train did not write)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (pass the .ckpt written by guidelab-train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise _refusal(path, err) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path} is not a guidelab checkpoint (no state_dict / hyper_parameters); "
                              "pass the .ckpt written by guidelab-train")
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


# hyperparameters that change how a run executes, not what it trains: a resume may change them
RUNTIME_HPARAMS = frozenset({"compile", "channels_last"})


def recipe_differences(saved: dict, current: dict, saved_name: str, current_name: str) -> list[str]:
    """Every hyperparameter (nested keys spelled out) on which a checkpoint's recipe and the current one
    differ, naming both sides; keys only one side has (another guidelab version) are not compared."""
    problems = []
    for key in sorted(set(saved) & set(current) - RUNTIME_HPARAMS):
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict):
            problems += [f"{key}.{problem}" for problem in recipe_differences(a, b, saved_name, current_name)]
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            problems.append(f"{key}: {saved_name} has {a!r}, {current_name} has {b!r}")
    return problems
