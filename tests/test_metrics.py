"""Quality-diversity metrics on real digits, with a tiny evaluation classifier trained here."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from guidelab.metrics import (
    ClassifierFeatures,
    ImprovedPrecisionRecall,
    InceptionFeatures,
    QualityDiversityMetrics,
    accuracy_of,
    make_feature_extractor,
)

TRAIN = 1400  # the rest of the 1797 digits is held out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: extra intra-op threads only add contention (10x slower on a busy 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyClassifier(nn.Module):
    """Classifier interface of the library: forward(x, t=None) -> logits, features(x, t=None), num_features."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.num_features = 32
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),  # 8x8 -> 4x4
            nn.Flatten(), nn.Linear(2 * width * 16, self.num_features), nn.Tanh(),
        )
        self.head = nn.Linear(self.num_features, num_classes)
        self.forward_calls = 0

    def features(self, x, t=None):
        self.forward_calls += 1
        return self.body(x)

    def forward(self, x, t=None):
        return self.head(self.features(x, t))


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # pixels 0..16 -> [-1, 1]
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def eval_net(digits):
    x, y = digits
    torch.manual_seed(0)
    net = TinyClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(0, TRAIN, (64,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def gaussian_noise(n, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def metrics_with_real(eval_net, real, batch=256):
    metrics = QualityDiversityMetrics(eval_net, num_classes=10)
    for chunk in real.split(batch):  # the real set arrives over several batches
        metrics.update_real(chunk)
    return metrics


def test_accuracy_of_labelled_real_images_is_high(digits, eval_net):
    x, y = digits
    eval_net.train()
    assert accuracy_of(eval_net, x[TRAIN:], y[TRAIN:], batch_size=100) >= 0.9
    assert accuracy_of(eval_net, x[TRAIN:], (y[TRAIN:] + 1) % 10) <= 0.1
    assert eval_net.training  # mode restored
    eval_net.eval()


def test_set_against_itself_and_against_noise(digits, eval_net):
    x, y = digits
    real = x[:800]
    metrics = metrics_with_real(eval_net, real)
    metrics.update_fake(real, y[:800])
    same = metrics.compute()
    metrics.reset_fake()
    metrics.update_fake(gaussian_noise(800), y[:800])
    noise = metrics.compute()

    assert set(same) == {"fid", "accuracy", "precision", "recall"}
    assert noise["fid"] > 1.0
    assert abs(same["fid"]) < 1e-3 * noise["fid"]
    assert same["precision"] >= 0.99 and same["recall"] >= 0.99
    assert same["accuracy"] >= 0.9 and noise["accuracy"] < 0.5
    # noise lies off the digit manifold; its recall is not asserted: k-NN balls around scattered noise
    # features are wide and cover many real points (a known weakness of improved recall with outliers)
    assert noise["precision"] < 0.3


def test_other_real_half_is_much_closer_than_noise_or_inverted_digits(digits, eval_net):
    x, y = digits
    metrics = metrics_with_real(eval_net, x[:800])
    scores = {}
    fakes = {"other_half": x[800:1600], "noise": gaussian_noise(800), "inverted": -x[800:1600],
             "shifted": (x[800:1600] + 1).clamp(-1, 1)}
    for name, fake in fakes.items():
        metrics.reset_fake()
        metrics.update_fake(fake, y[800:1600])
        scores[name] = metrics.compute()
    other = scores["other_half"]
    assert other["fid"] < 0.1 * scores["noise"]["fid"]
    assert other["fid"] < 0.2 * scores["inverted"]["fid"]
    assert other["precision"] > 0.8 and other["recall"] > 0.8
    assert scores["inverted"]["precision"] < other["precision"] - 0.3
    assert scores["inverted"]["recall"] < other["recall"] - 0.3
    assert scores["shifted"]["precision"] < 0.2 and scores["shifted"]["recall"] < 0.2


def test_real_features_persist_across_reset_fake(digits, eval_net):
    x, y = digits
    metrics = metrics_with_real(eval_net, x[:500])
    metrics.update_fake(x[500:700], y[500:700])
    first = metrics.compute()
    metrics.reset_fake()
    metrics.update_fake(x[900:1100], y[900:1100])
    second = metrics.compute()
    metrics.reset_fake()
    metrics.update_fake(x[500:700], y[500:700])
    again = metrics.compute()
    assert first["fid"] != second["fid"]
    assert again == pytest.approx(first, rel=1e-6, abs=1e-9)
    assert int(metrics.fid.real_features_num_samples) == 500
    assert int(metrics.fid.fake_features_num_samples) == 200  # the fakes did not pile up


def test_precision_recall_metric_directly():
    torch.manual_seed(0)
    real = torch.randn(300, 5)
    prc = ImprovedPrecisionRecall(k=3, reset_real_features=False)
    prc.update(real[:100], real=True)
    prc.update(real[100:], real=True)
    prc.update(real, real=False)
    precision, recall = prc.compute()
    assert precision == 1 and recall == 1
    prc.reset()
    prc.update(real[:150] * 0.2, real=False)  # collapsed onto the centre: precise, not diverse
    precision, recall = prc.compute()
    assert precision > 0.9 and recall < 0.5
    prc.reset()
    prc.update(real + 20, real=False)  # shifted far away: neither
    assert tuple(prc.compute()) == (0, 0)

    forgetful = ImprovedPrecisionRecall(k=3)  # default: reset() drops the real features too
    forgetful.update(real, real=True)
    forgetful.reset()
    forgetful.update(real, real=False)
    with pytest.raises(ValueError, match="real"):
        forgetful.compute()


def test_too_few_samples_raise(digits, eval_net):
    x, y = digits
    metrics = metrics_with_real(eval_net, x[:100])
    metrics.update_fake(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least"):
        metrics.compute()
    few_real = metrics_with_real(eval_net, x[:1])
    few_real.update_fake(x[:100], y[:100])
    with pytest.raises(ValueError, match="1 real"):
        few_real.compute()


def test_classifier_features_plug_into_torchmetrics_fid(digits, eval_net):
    x, _ = digits
    feats = ClassifierFeatures(eval_net)
    calls = eval_net.forward_calls
    fid = FrechetInceptionDistance(feature=feats)
    assert eval_net.forward_calls == calls  # width taken from num_features, no 299x299 dummy image
    out = feats(x[:3])
    assert out.shape == (3, eval_net.num_features) and out.dtype == torch.float32
    assert torch.equal(out, eval_net.features(x[:3]))  # [-1, 1] images arrive unchanged
    fid.update(x[:50], real=True)
    fid.update(x[:50], real=False)
    assert abs(float(fid.compute())) < 1e-3
    feats.train()
    assert not eval_net.training  # a parent's .train() cannot unfreeze the evaluation net
    assert not any(p.requires_grad for p in feats.parameters())


def test_inception_missing_weights_and_unknown_kind(eval_net, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth") as err:
        InceptionFeatures(tmp_path)
    assert str(tmp_path) in str(err.value) and "https://" in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub_home"))  # the default looks in the torch hub cache
    with pytest.raises(FileNotFoundError, match="hub_home"):
        make_feature_extractor("inception")
    with pytest.raises(ValueError, match="classifier.*inception"):
        make_feature_extractor("clip", eval_net)


def test_each_batch_goes_through_the_feature_extractor_once(digits, eval_net):
    """FID and precision/recall share one feature pass per batch (through Inception, the cost of scoring);
    the accuracy adds the evaluation classifier's own forward on generated samples."""
    x, y = digits
    metrics = QualityDiversityMetrics(eval_net, 10)
    calls = eval_net.forward_calls
    metrics.update_real(x[:100])
    assert eval_net.forward_calls == calls + 1
    metrics.update_fake(x[100:200], y[100:200])
    assert eval_net.forward_calls == calls + 3  # features once, logits once
    reference = FrechetInceptionDistance(feature=ClassifierFeatures(eval_net))
    reference.update(x[:100], real=True)
    reference.update(x[100:200], real=False)
    assert metrics.compute()["fid"] == pytest.approx(float(reference.compute()), rel=1e-9)
    assert metrics.extractor._last is None  # no batch held past its update
