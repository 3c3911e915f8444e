"""The classifier on a second CUDA stream (ClassifierGuidance(streams=True)): off CUDA the sequential call, the
same values and the same record; how it is chosen from the config. Its CUDA twin is in test_gpu.py."""

import pytest
import torch

from guidelab.diffusion import ClassifierGuidance, NoiseSchedule, sample
from guidelab.diffusion.guidance.streams import concurrently
from guidelab.nets import EncoderClassifier, UNet

NET = dict(image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
           attention_downsample=(2,), num_heads=4, dropout=0.0, groups=8)


def test_concurrently_off_cuda_is_the_sequential_call():
    calls = []
    out = concurrently(lambda: calls.append("main") or 1, lambda: calls.append("side") or (2, 3), "cpu")
    assert out == (1, (2, 3)) and calls == ["main", "side"]


def test_classifier_on_a_second_stream_samples_the_same_and_says_so():
    torch.manual_seed(0)
    model = UNet(**NET).eval().requires_grad_(False)
    classifier = EncoderClassifier(**NET, num_classes=10).eval().requires_grad_(False)
    noise = torch.randn(8, 1, 8, 8)
    scales = torch.tensor([0.0, 1.0, 2.0, 4.0]).repeat_interleave(2)
    out = {}
    for streams in (False, True):
        guidance = ClassifierGuidance(classifier, streams=streams)
        out[streams] = sample(model, NoiseSchedule.linear(1000), (8, 1, 8, 8), guidance=guidance, y=torch.arange(8),
                              scale=scales, steps=4, sampler="ddim", noise=noise)
        assert guidance.describe() == {"method": "classifier", "form": "eps", **({"streams": True} if streams else {})}
    assert torch.equal(out[False], out[True])


def test_streams_must_be_a_bool():
    with pytest.raises(ValueError, match="streams must be true or false, got 'yes'"):
        ClassifierGuidance(torch.nn.Linear(2, 3), streams="yes")
