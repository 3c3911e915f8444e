import math

import pytest
import torch
from omegaconf import OmegaConf

from guidelab.nets import EncoderClassifier, SmallCNNClassifier, UNet, timestep_embedding
from guidelab.nets.layers import AttentionBlock

DIGITS_UNET = dict(
    image_size=8, in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
    attention_resolutions=(4,), dropout=0.0, groups=8,
)
# Narrow 32x32x3 nets; base 24 with groups 32 also exercises the gcd group count.
SMALL_RGB_UNET = dict(
    image_size=32, in_channels=3, base_channels=24, channel_mult=(1, 2, 2), num_res_blocks=1,
    attention_resolutions=(16,), dropout=0.0, groups=32,
)
CASES = [(1, 8, DIGITS_UNET), (3, 32, SMALL_RGB_UNET)]


def encoder_kwargs(unet_kwargs):
    return {k: v for k, v in unet_kwargs.items() if k not in ("image_size", "in_channels", "dropout")}


def randomize_zero_params(model):
    """Zero-initialised convs make a fresh net ignore its inputs; give them random weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(std=0.05)
    return model


def test_timestep_embedding_values():
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (3, 16) and emb.dtype == torch.float32
    assert torch.allclose(emb[0, :8], torch.ones(8)) and torch.allclose(emb[0, 8:], torch.zeros(8))
    # First frequency is 1: the pair (cos t, sin t).
    assert emb[1, 0].item() == pytest.approx(math.cos(7), abs=1e-6)
    assert emb[1, 8].item() == pytest.approx(math.sin(7), abs=1e-6)
    odd = timestep_embedding(t, 9)
    assert odd.shape == (3, 9) and torch.all(odd[:, -1] == 0)


@pytest.mark.parametrize("channels,size,kwargs", CASES)
def test_unet_output_shape_and_zero_init(channels, size, kwargs):
    net = UNet(**kwargs)
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([3, 900]))
    assert out.shape == x.shape
    assert torch.all(out == 0), "final conv should be zero-initialised"
    assert UNet(**{**kwargs, "out_channels": 2 * channels})(x, torch.tensor([0, 1])).shape[1] == 2 * channels


@pytest.mark.parametrize("channels,size,kwargs", CASES)
def test_unet_depends_on_t(channels, size, kwargs):
    net = randomize_zero_params(UNet(**kwargs)).eval()
    x = torch.randn(1, channels, size, size).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([5, 800]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    same = net(x, torch.tensor([5, 5]))
    assert torch.allclose(same[0], same[1], atol=1e-5)


def test_unet_channels_last_and_bf16_autocast():
    net = randomize_zero_params(UNet(**DIGITS_UNET)).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 400, 999])
    ref = net(x, t)
    net_cl = net.to(memory_format=torch.channels_last)
    out_cl = net_cl(x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(ref, out_cl, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf = net_cl(x, t)
    assert out_bf.dtype == torch.bfloat16
    assert (out_bf.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_unet_accepts_list_configs():
    cfg = OmegaConf.create({"channel_mult": [1, 2], "attention_resolutions": [4]})
    net = UNet(**{**DIGITS_UNET, "channel_mult": cfg.channel_mult, "attention_resolutions": cfg.attention_resolutions})
    ref = UNet(**DIGITS_UNET)
    assert net.num_parameters() == ref.num_parameters()
    assert net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2])).shape == (2, 1, 8, 8)


def test_cifar_preset_size():
    net = UNet()
    assert abs(net.num_parameters() - 35.7e6) / 35.7e6 < 0.03
    assert any(isinstance(m, AttentionBlock) for m in net.encoder.middle)
    assert net(torch.randn(1, 3, 32, 32), torch.tensor([10])).shape == (1, 3, 32, 32)


def test_digits_preset_size():
    assert 0.1e6 < UNet(**DIGITS_UNET).num_parameters() < 0.4e6


def test_unet_rejects_bad_inputs():
    net = UNet(**DIGITS_UNET)
    t = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="1 input channels"):
        net(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        net(torch.randn(2, 8, 8), t)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(2, 1, 7, 8), t)
    with pytest.raises(ValueError, match="shape \\[2\\]"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs timesteps"):
        net(torch.randn(2, 1, 8, 8), None)
    with pytest.raises(ValueError, match="never occur"):
        UNet(**{**DIGITS_UNET, "attention_resolutions": (16,)})
    with pytest.raises(ValueError, match="not divisible"):
        UNet(**{**DIGITS_UNET, "image_size": 10, "channel_mult": (1, 2, 2)})


def make_classifiers(channels, size, kwargs):
    enc = EncoderClassifier(size, channels, 10, **encoder_kwargs(kwargs))
    cnn = SmallCNNClassifier(size, channels, 10, width=16)
    return enc, cnn


@pytest.mark.parametrize("channels,size,kwargs", CASES)
def test_classifier_shapes_features_and_head(channels, size, kwargs):
    x, t = torch.randn(3, channels, size, size), torch.tensor([0, 50, 999])
    for net in make_classifiers(channels, size, kwargs):
        net.eval()
        feats = net.features(x, t)
        logits = net(x, t)
        assert net.num_classes == 10 and logits.shape == (3, 10)
        assert feats.shape == (3, net.num_features) and isinstance(net.num_features, int)
        assert torch.allclose(logits, net.head(feats), atol=1e-6)
        assert torch.allclose(net(x), net(x, torch.zeros(3, dtype=torch.long)), atol=1e-6)


@pytest.mark.parametrize("channels,size,kwargs", CASES)
def test_classifier_gradient_wrt_x(channels, size, kwargs):
    t = torch.tensor([10, 600])
    for net in make_classifiers(channels, size, kwargs):
        x = torch.randn(2, channels, size, size, requires_grad=True)
        y = torch.tensor([3, 7])
        log_p = net(x, t).log_softmax(-1)[torch.arange(2), y].sum()
        (grad,) = torch.autograd.grad(log_p, x)
        assert grad.shape == x.shape and torch.isfinite(grad).all()
        assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0


@pytest.mark.parametrize("kind", ["encoder", "cnn"])
def test_time_conditioned_classifiers_depend_on_t(kind):
    enc, cnn = make_classifiers(1, 8, DIGITS_UNET)
    net = randomize_zero_params(enc if kind == "encoder" else cnn).eval()
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    logits = net(x, torch.tensor([0, 900]))
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)


def test_clean_cnn_ignores_t():
    net = SmallCNNClassifier(8, 1, 10, width=16, time_conditioned=False).eval()
    assert not any("time" in name or "emb" in name for name, _ in net.named_parameters())
    x = torch.randn(2, 1, 8, 8)
    ref = net(x)
    assert torch.equal(ref, net(x, torch.tensor([0, 999])))
    assert torch.equal(ref, net(x, torch.tensor([1, 2, 3])))  # t is not even looked at
    assert net.features(x).shape == (2, net.num_features)


def test_classifiers_reject_bad_inputs():
    enc, cnn = make_classifiers(1, 8, DIGITS_UNET)
    for net in (enc, cnn):
        with pytest.raises(ValueError, match="input channels"):
            net(torch.randn(2, 3, 8, 8))
        with pytest.raises(ValueError, match="8x8 images"):
            net(torch.randn(2, 1, 16, 16))
        with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
            net.features(torch.randn(1, 8, 8))
        with pytest.raises(ValueError, match="shape \\[2\\]"):
            net(torch.randn(2, 1, 8, 8), torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="num_classes"):
        SmallCNNClassifier(8, 1, 1)


@pytest.mark.parametrize("net_config,task", [("unet_digits", "ddpm"), ("encoder_digits", "classifier")])
def test_digits_nets_follow_the_data_image_size(net_config, task):
    """data.image_size=16 with the digits configs: attention moves from the 4x4 maps (of 8x8 images) to the 8x8
    maps (of 16x16), the same depth, with no net override; the weights keep the same shapes."""
    from conftest import compose_config

    from guidelab.apps.config import instantiate
    from guidelab.modules.base import build_net

    shapes = {}
    for size in (8, 16):
        cfg = compose_config("train", [f"task={task}", f"net={net_config}", f"data.image_size={size}"])
        data = instantiate(cfg.data)
        net = build_net(OmegaConf.to_container(cfg.net, resolve=True), data.image_shape, data.num_classes if
                        task != "ddpm" else None)
        encoder = net.encoder
        assert encoder.attention_resolutions == {size // 2}
        assert sum(isinstance(m, AttentionBlock) for m in encoder.down.modules()) == 1
        x = torch.randn(2, *data.image_shape)
        assert net(x, torch.tensor([1, 2])).shape[0] == 2
        shapes[size] = {name: p.shape for name, p in net.named_parameters()}
    assert shapes[8] == shapes[16]
