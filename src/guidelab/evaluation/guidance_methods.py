"""Guidance methods from config nodes (conf/method/*.yaml): which nets each needs, loaded and checked
before any sampling. Shared by guidelab-sweep and the GuidedSamplingCallback.

A method node has a `kind` and its parameters; nets it needs come from its own `*_checkpoint` key or,
when that is null, from the sweep's top-level key of the same role (`Nets.paths`). A node may also set
`sampler`, `steps` or `eta`, overriding the shared sweep settings for that method alone.

A user's own method is a node with `_target_` instead of `kind`: a `Guidance` subclass (or a function returning
one), called with the node's other keys. The nets it names among its parameters (`NET_PARAMETERS`) are handed
over loaded and checked as for the built-in kinds, and `inner` is built from a method node of its own.
"""

from __future__ import annotations

import hashlib
import inspect
import pydoc
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from guidelab.diffusion import (
    Autoguidance,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    CleanClassifierGuidance,
    Composite,
    Guidance,
    GuidanceInterval,
    ManifoldConstrained,
    ProjectedGuidance,
)
from guidelab.modules import CheckpointError, check_compatible, load_module

SAMPLING_OVERRIDES = ("sampler", "steps", "eta")
# parameters of a user's `_target_` method that receive nets, and the node keys naming their checkpoints
NET_PARAMETERS = {"classifier": "classifier_checkpoint", "clean_classifier": "clean_classifier_checkpoint",
                  "weak_ddpm": "weak_ddpm_checkpoint", "inner": None}


@dataclass
class SweepMethod:
    """One method of a sweep: its guidance object, the eps-model it guides and its sampling overrides."""

    name: str
    guidance: Guidance
    model: torch.nn.Module
    overrides: dict = field(default_factory=dict)


@dataclass
class Nets:
    """The nets a sweep already holds, and the top-level checkpoint paths methods fall back on.

    ddpm: the DDPM module; classifier: the noisy guide (a loaded module, or the one in training) or None;
    eval_classifier: the judge, never a guide; paths: role -> checkpoint path (classifier_checkpoint,
    clean_classifier_checkpoint, weak_ddpm_checkpoint, cfg_ddpm_checkpoint, eval_classifier_checkpoint)."""

    ddpm: torch.nn.Module
    classifier: torch.nn.Module | None
    eval_classifier: torch.nn.Module
    paths: dict
    loaded: dict = field(default_factory=dict)

    def load(self, path, kind):
        key = (str(Path(path).resolve()), kind if isinstance(kind, str) else tuple(kind))
        if key not in self.loaded:
            self.loaded[key] = load_module(path, kind)
        return self.loaded[key]

    def path_for(self, node: dict, key: str, method: str) -> str:
        path = node.get(key) or self.paths.get(key)
        if not path:
            raise CheckpointError(f"method {method!r} needs {key}: set {key}=... (or method.{method}.{key}=...)")
        return str(path)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state_dict tensors (names and bytes): equal weights, equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def refuse_judge_as_guide(guide, guide_path: str, nets: Nets, method: str) -> None:
    """Guiding with the classifier that scores accuracy would fake it: refuse the same file or the same weights."""
    judge_path = nets.paths.get("eval_classifier_checkpoint")
    same_file = judge_path is not None and Path(guide_path).resolve() == Path(judge_path).resolve()
    if same_file or weights_digest(guide) == weights_digest(nets.eval_classifier):
        raise CheckpointError(
            f"method {method!r}: the guide {guide_path} is the evaluation classifier "
            f"{judge_path or '(in memory)'} ({'same file' if same_file else 'same weights'}); guiding with the "
            "judge fakes the accuracy. Train another clean classifier (e.g. task=eval_classifier seed=1)")


def _noisy_classifier(node, nets: Nets, method: str):
    if node.get("classifier_checkpoint"):
        classifier = nets.load(node["classifier_checkpoint"], "classifier")
        where = node["classifier_checkpoint"]
    elif nets.classifier is not None:
        classifier, where = nets.classifier, nets.paths.get("classifier_checkpoint") or "the classifier in training"
    else:
        classifier = nets.load(nets.path_for(node, "classifier_checkpoint", method), "classifier")
        where = nets.paths["classifier_checkpoint"]
    check_compatible(nets.ddpm, classifier, keys=("schedule", "image_shape"))
    check_compatible(classifier, nets.eval_classifier, keys=("image_shape", "num_classes"))
    return classifier, where


def _build(node: dict, nets: Nets, method: str) -> tuple[Guidance, torch.nn.Module]:
    """(guidance, eps-model) for one node; wrappers recurse into `inner` / `parts`."""
    kind = node.get("kind")
    model = nets.ddpm
    if kind == "auto":
        kind = "cfg" if nets.ddpm.meta["kind"] == "cfg_ddpm" else "classifier"
        node = {**node, "kind": kind, "form": "eps"}
    if kind == "classifier":
        classifier, _ = _noisy_classifier(node, nets, method)
        return ClassifierGuidance(classifier, form=node.get("form", "eps"), streams=node.get("streams", False)), model
    if kind == "cfg":
        path = node.get("ddpm_checkpoint") or nets.paths.get("cfg_ddpm_checkpoint")
        model = nets.load(path, "cfg_ddpm") if path else nets.ddpm
        if model.meta["kind"] != "cfg_ddpm":
            raise CheckpointError(f"method {method!r} needs a task=cfg_ddpm eps-model: set cfg_ddpm_checkpoint=... "
                                  f"(ddpm_checkpoint {nets.paths.get('ddpm_checkpoint')} is a {model.meta['kind']!r})")
        check_compatible(model, nets.eval_classifier, keys=("image_shape", "num_classes"))
        return ClassifierFreeGuidance(null_class=model.num_classes, num_classes=model.num_classes), model
    if kind == "clean_x0":
        path = node.get("classifier_checkpoint") or nets.path_for(node, "clean_classifier_checkpoint", method)
        return CleanClassifierGuidance(_clean_classifier(path, nets, method),
                                       through_model=bool(node.get("through_model", False))), model
    if kind == "autoguidance":
        return Autoguidance(_weak_ddpm(node, nets, method)), model
    if kind in ("interval", "cgpp", "projected"):
        if "inner" not in node:
            raise ValueError(f"method {method!r} ({kind}) needs an `inner` method node")
        inner, model = _build(node["inner"], nets, method)
        if kind == "interval":
            return GuidanceInterval(inner, int(node["t_min"]), int(node["t_max"])), model
        if kind == "cgpp":
            return ManifoldConstrained(inner), model
        return ProjectedGuidance(inner, parallel_weight=float(node.get("parallel_weight", 0.0)),
                                 max_norm=node.get("max_norm")), model
    if kind is None and "_target_" in node:
        return _build_target(node, nets, method)
    if kind == "composite":
        built = [_build(part, nets, method) for part in node.get("parts", [])]
        if any(part_model is not nets.ddpm for _, part_model in built):
            raise ValueError(f"method {method!r}: composite parts must all guide the sweep's ddpm_checkpoint")
        return Composite([guidance for guidance, _ in built], node.get("weights")), model
    raise ValueError(f"method {method!r}: unknown kind {kind!r}; choose one of "
                     "auto, classifier, cfg, interval, cgpp, projected, clean_x0, autoguidance, composite, "
                     "or give `_target_: your.Guidance` instead of `kind`")


def _clean_classifier(path: str, nets: Nets, method: str):
    clean = nets.load(path, "eval_classifier")
    refuse_judge_as_guide(clean, path, nets, method)
    check_compatible(clean, nets.eval_classifier, keys=("image_shape", "num_classes"))
    return clean


def _weak_ddpm(node, nets: Nets, method: str):
    weak = nets.load(nets.path_for(node, "weak_ddpm_checkpoint", method), "ddpm")
    check_compatible(nets.ddpm, weak, keys=("schedule", "image_shape"))
    return weak


def _build_target(node: dict, nets: Nets, method: str) -> tuple[Guidance, torch.nn.Module]:
    """A user's method: `_target_` called with the node's other keys and the nets its parameters name."""
    try:
        target = pydoc.locate(node["_target_"])  # None when no such module or attribute
    except pydoc.ErrorDuringImport as err:  # the module exists and fails as it is imported
        raise ValueError(f"method {method!r}: importing _target_ {node['_target_']!r} failed: {err.value!r}") from err
    if target is None:
        raise ValueError(f"method {method!r}: _target_ {node['_target_']!r} cannot be imported; is its package "
                         "installed, or on PYTHONPATH?")
    reserved = {"_target_", *SAMPLING_OVERRIDES, *(key for key in NET_PARAMETERS.values() if key)}
    kwargs = {key: value for key, value in node.items() if key not in reserved}
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself will say
        signature = None
    wanted = [name for name in NET_PARAMETERS if signature is not None and name in signature.parameters]
    if signature is not None:  # the node's keys against the constructor, before any net is loaded
        try:
            signature.bind(**kwargs, **{name: None for name in wanted if name not in kwargs})
        except TypeError as err:
            raise ValueError(f"method {method!r}: {node['_target_']} does not take this node's keys "
                             f"{sorted(kwargs)}: {err}") from err
    model = nets.ddpm
    if "classifier" in wanted:
        kwargs["classifier"], _ = _noisy_classifier(node, nets, method)
    if "clean_classifier" in wanted:
        path = nets.path_for(node, "clean_classifier_checkpoint", method)
        kwargs["clean_classifier"] = _clean_classifier(path, nets, method)
    if "weak_ddpm" in wanted:
        kwargs["weak_ddpm"] = _weak_ddpm(node, nets, method)
    if "inner" in wanted:
        if not isinstance(node.get("inner"), dict):
            raise ValueError(f"method {method!r}: {node['_target_']} takes `inner`; give it a method node there")
        kwargs["inner"], model = _build(node["inner"], nets, method)
    guidance = target(**kwargs)
    if not isinstance(guidance, Guidance):
        raise ValueError(f"method {method!r}: {node['_target_']} made a {type(guidance).__name__}, not a "
                         "guidelab.diffusion.Guidance")
    return guidance, model


def build_methods(nodes: dict, nets: Nets, device=None) -> dict[str, SweepMethod]:
    """One SweepMethod per config node (name -> node), every net loaded, checked and moved to `device`."""
    if not nodes:
        raise ValueError("no guidance method selected: pass method=[classifier,...] (files of conf/method/)")
    methods = {}
    for name, node in nodes.items():
        node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        guidance, model = _build(node, nets, name)
        if node.get("kind") == "auto":
            name = guidance.name
        overrides = {key: node[key] for key in SAMPLING_OVERRIDES if key in node}
        methods[name] = SweepMethod(name, guidance, model, overrides)
    if device is not None:
        for module in nets.loaded.values():
            module.to(device)
    return methods
