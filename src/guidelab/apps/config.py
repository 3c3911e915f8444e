"""Hydra plumbing shared by the entry points: config path, resolvers, the printed and saved config."""

from __future__ import annotations

import uuid
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

# The configs ship inside the package (guidelab/conf, package data of the wheel) and are found as a
# Python package through Hydra's pkg:// config source, wherever guidelab is installed.
CONFIG_MODULE = "guidelab.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"

if not OmegaConf.has_resolver("uid"):
    # a short random id, resolved once per config: run dirs never collide, even within one second
    OmegaConf.register_new_resolver("uid", lambda: uuid.uuid4().hex[:6], use_cache=True)


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Show the resolved config as a rich tree (one branch per group) and save it beside the run."""
    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        # long values (checkpoint paths) wrap onto the next line: Rich's default cuts them at the console's
        # width, 80 columns in a log file or a SLURM job's output
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rich.print(tree)
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        Path(save_to).write_text(OmegaConf.to_yaml(cfg, resolve=True))


class ConfigError(ValueError):
    """A config value that the part it configures refused."""


def missing_values_error(keys: list[str]) -> ConfigError:
    """The error for config keys left at `???`: which ones, and what to pass for each."""
    hints = [f"{key}=" + ("<path to a .ckpt written by guidelab-train>" if key.endswith("_checkpoint") else "<value>")
             for key in keys]
    verb = "has no value and is required" if len(keys) == 1 else "have no value and are required"
    return ConfigError(f"{', '.join(keys)} {verb}; pass {' '.join(hints)}")


def check_required(cfg: DictConfig) -> None:
    """Every key left at `???` at once, before any work (omegaconf would name only the first one it meets)."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except Exception:  # an interpolation that cannot resolve here: the first missing key is still named later
        return
    if missing:
        raise missing_values_error(missing)


def check_cuda_visible(key: str, value, fix: str) -> None:
    """Refuse, before any work, a device setting that asks for a CUDA GPU ("gpu", "cuda", "cuda:1") where torch
    sees none (Lightning would say "No supported gpu backend found!" only once the data is built, torch "Torch
    not compiled with CUDA enabled" at the first transfer). Other values ("cpu", "auto") pass."""
    import torch

    if not str(value).startswith(("gpu", "cuda")) or torch.cuda.is_available():
        return
    why = ("this torch build has no CUDA" if torch.version.cuda is None else
           f"torch {torch.__version__} sees no CUDA device (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    raise ConfigError(f"{key}={value} asks for a CUDA GPU, but {why}; {fix}")


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, but a ValueError raised by the target comes out as a ConfigError naming
    the config key and the problem, instead of hydra's wrapped traceback."""
    import hydra.utils
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):  # a target that instantiates its own parts (the net)
            cause = cause.__cause__
        if isinstance(cause, ValueError):
            target = node.get("_target_", "?") if hasattr(node, "get") else "?"
            raise ConfigError(f"invalid config for {target}: {cause}") from cause
        raise


def read_data_shape(cfg: DictConfig, datamodule) -> tuple[list[int], int]:
    """The data's image shape and class count; a data module that cannot tell (no class folders, ...) is a
    config problem of `data`."""
    try:
        return list(datamodule.image_shape), datamodule.num_classes
    except ValueError as err:
        raise ConfigError(f"data ({cfg.data._target_}): {err}") from err


def discard_failed_run_dir(output_dir: str | Path, keep=("checkpoints", "quality_diversity.json")) -> bool:
    """After a failure before any work: remove the run dir Hydra made, so bad input leaves nothing
    behind. A dir that holds results (checkpoints, a report) is never touched."""
    import shutil

    output_dir = Path(output_dir)
    if not output_dir.is_dir() or any((output_dir / name).exists() for name in keep):
        return False
    shutil.rmtree(output_dir, ignore_errors=True)
    return True


def ensure_writable(output_dir: str | Path,
                    fix: str = "point paths.log_dir (or paths.output_dir / hydra.run.dir) at a writable folder") -> Path:
    """Fail at once, naming the folder and the fix, if the run dir cannot be written."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"output dir {output_dir} is not writable ({err.strerror or err}); {fix}"
        ) from err
    return output_dir


def compose_config(config_name: str, overrides: list[str], return_hydra_config: bool = False):
    """Compose one of guidelab's configs from Python (no Hydra app around it), e.g. to chain several runs.

    A user's own config dirs join through the override `hydra.searchpath=[file:///abs/my_configs]`,
    as on the command line."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name, overrides, return_hydra_config=return_hydra_config)


def route_overrides(args: list[str], stages) -> dict[str, list[str]]:
    """Overrides prefixed by a stage name, per stage: 'ddpm.trainer.max_steps=10' -> {'ddpm': ['trainer.max_steps=10']}."""
    routed = {name: [] for name in stages}
    for arg in args:
        stage, _, rest = arg.partition(".")
        if stage not in routed or not rest:
            raise SystemExit(f"override {arg!r} must start with one of {sorted(routed)} followed by '.'")
        routed[stage].append(rest)
    return routed
