"""One source for the sweep's settings: guidelab-sweep and the training callback compose the same nodes."""

import dataclasses

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from guidelab.evaluation.sweep_settings import SweepSettings

CALLBACK = ["task=classifier", "callbacks=guided_sampling"]


def test_sweep_and_callback_read_the_same_nodes():
    sweep = compose_config("sweep", ["ddpm_checkpoint=a", "eval_classifier_checkpoint=b"])
    callback = compose_config("train", CALLBACK).callbacks.guided_sampling
    shared = OmegaConf.to_container(sweep.guidance, resolve=True)
    own = OmegaConf.to_container(callback.settings, resolve=True)
    assert {k: v for k, v in own.items() if k != "samples_per_scale"} == \
        {k: v for k, v in shared.items() if k != "samples_per_scale"}
    assert own["samples_per_scale"] == 200 and shared["samples_per_scale"] == 500  # the one documented override
    assert OmegaConf.to_container(callback.metrics) == OmegaConf.to_container(sweep.metrics)
    # editing the shared file's value through the config reaches both
    edited = compose_config("train", CALLBACK + ["seed=7"]).callbacks.guided_sampling.settings
    assert SweepSettings.from_config(edited).seed == 7


def test_settings_have_no_python_defaults():
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(SweepSettings))


def test_settings_refuse_unknown_or_missing_keys():
    node = OmegaConf.to_container(compose_config("sweep", ["ddpm_checkpoint=a", "eval_classifier_checkpoint=b"]).guidance,
                                  resolve=True)
    with pytest.raises(ValueError, match=r"unknown keys \['form'\], missing keys \[\]"):
        SweepSettings.from_config({**node, "form": "eps"})
    del node["grid_size"]
    with pytest.raises(ValueError, match=r"missing keys \['grid_size'\]"):
        SweepSettings.from_config(node)


def test_several_methods_compose_for_sweep_and_callback():
    sweep = compose_config("sweep", ["ddpm_checkpoint=a", "eval_classifier_checkpoint=b",
                                     "method=[classifier,cgpp,autoguidance_cg]", "method.cgpp.inner.form=eps"])
    assert list(sweep.method) == ["classifier", "cgpp", "autoguidance_cg"]
    assert sweep.method.autoguidance_cg.parts[0].kind == "autoguidance"
    # what each job of `guidelab-sweep -m method=classifier,cgpp` composes: one method
    single = compose_config("sweep", ["ddpm_checkpoint=a", "eval_classifier_checkpoint=b", "method=cgpp"])
    assert list(single.method) == ["cgpp"]
    callback = compose_config("train", CALLBACK + ["method@callbacks.guided_sampling.method=[interval,projected]"])
    assert list(callback.callbacks.guided_sampling.method) == ["interval", "projected"]
