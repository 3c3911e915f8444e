"""Quality-diversity metrics on real digits with a small trained evaluation classifier."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from guidelab.metrics import (
    ClassifierFeatures,
    ImprovedPrecisionRecall,
    InceptionFeatures,
    QualityDiversityMetrics,
    accuracy_of,
    make_feature_extractor,
)
from guidelab.nets import SmallCNNClassifier


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def eval_net(digits):
    x, y = digits
    torch.manual_seed(0)
    net = SmallCNNClassifier(image_size=8, in_channels=1, num_classes=10, width=16, time_conditioned=False)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(0, 1400, (64,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_accuracy_of_labelled_real_images_is_high(digits, eval_net):
    x, y = digits
    assert accuracy_of(eval_net, x[1400:], y[1400:]) >= 0.9
    assert accuracy_of(eval_net, x[1400:], (y[1400:] + 1) % 10) <= 0.1


def metrics_with_real(eval_net, real):
    metrics = QualityDiversityMetrics(eval_net, num_classes=10)
    for batch in real.split(256):
        metrics.update_real(batch)
    return metrics


def test_fid_precision_recall_of_a_set_against_itself(digits, eval_net):
    x, y = digits
    real = x[:800]
    metrics = metrics_with_real(eval_net, real)
    metrics.update_fake(real, y[:800])
    same = metrics.compute()
    metrics.reset_fake()
    noise = torch.rand(800, 1, 8, 8) * 2 - 1
    metrics.update_fake(noise, y[:800])
    far = metrics.compute()
    assert far["fid"] > 1.0
    assert abs(same["fid"]) < 1e-3 * far["fid"]
    assert same["precision"] >= 0.99 and same["recall"] >= 0.99
    assert same["accuracy"] >= 0.9
    assert far["precision"] < 0.2 and far["recall"] < same["recall"] - 0.2


def test_other_real_half_is_closer_than_noise(digits, eval_net):
    x, y = digits
    metrics = metrics_with_real(eval_net, x[:800])
    metrics.update_fake(x[800:1600], y[800:1600])
    other_half = metrics.compute()
    metrics.reset_fake()
    metrics.update_fake(-x[800:1600], y[800:1600])  # inverted digits: a different distribution
    inverted = metrics.compute()
    assert other_half["fid"] < 0.2 * inverted["fid"]
    assert other_half["recall"] > inverted["recall"]


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
    assert first != second
    assert again == pytest.approx(first, rel=1e-6, abs=1e-9)
    assert int(metrics.fid.real_features_num_samples) == 500


def test_precision_recall_metric_directly():
    torch.manual_seed(0)
    real = torch.randn(300, 5)
    prc = ImprovedPrecisionRecall(k=3, reset_real_features=False)
    prc.update(real, real=True)
    prc.update(real[:150] * 0.2, real=False)  # collapsed onto the centre: precise, not diverse
    precision, recall = prc.compute()
    assert precision > 0.9 and recall < 0.5
    prc.reset()
    prc.update(real + 20, real=False)  # far away: neither
    precision, recall = prc.compute()
    assert precision == 0 and recall == 0


def test_too_few_samples_raise(digits, eval_net):
    x, y = digits
    metrics = metrics_with_real(eval_net, x[:100])
    metrics.update_fake(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.compute()


def test_feature_extractors(eval_net, tmp_path):
    feats = ClassifierFeatures(eval_net)
    assert feats(torch.zeros(3, 1, 8, 8)).shape == (3, feats.num_features)
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth") as err:
        InceptionFeatures(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="unknown feature space"):
        make_feature_extractor("clip", eval_net)
