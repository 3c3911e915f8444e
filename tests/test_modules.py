"""Module construction and loading: each checkpoint comes back as the class it was trained as (old ones
too), and the per-noise-quartile metrics route every sample to its quartile."""

import pytest
import torch
from torchmetrics import MeanMetric

from guidelab.modules import (ClassifierModule, ConditionalDDPMModule, DDPMModule, EvalClassifierModule,
                              NoisyClassifierModule, load_module)
from guidelab.modules.quartiles import QuartileMetrics, noise_quartile

UNET = {"_target_": "guidelab.nets.UNet", "base_channels": 8, "channel_mult": [1], "num_res_blocks": 1,
        "attention_resolutions": [], "groups": 4}
CNN = {"_target_": "guidelab.nets.SmallCNNClassifier", "width": 8}
LINEAR = {"kind": "linear", "T": 100}
SHAPE = [1, 8, 8]


def made(cls):
    net = {**CNN, "time_conditioned": False} if cls is EvalClassifierModule else CNN
    if cls in (DDPMModule, ConditionalDDPMModule):
        net = UNET
    return cls(net, LINEAR, SHAPE, 10, lr=1e-3)


@pytest.mark.parametrize("cls", [DDPMModule, ConditionalDDPMModule, NoisyClassifierModule, EvalClassifierModule])
@pytest.mark.parametrize("era", ["now", "before_0.2"])
def test_checkpoint_loads_as_the_class_it_was_trained_as(cls, era, tmp_path):
    module = made(cls)
    hparams = dict(module.hparams)
    assert hparams["kind"] == cls.kind  # the key read_checkpoint picks the class by
    if era == "before_0.2" and issubclass(cls, ClassifierModule):
        hparams["noisy"] = cls.noisy  # older checkpoints also carry the dropped `noisy` argument
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, tmp_path / "m.ckpt")
    loaded = load_module(tmp_path / "m.ckpt")
    assert type(loaded) is cls
    assert loaded.hparams.lr == 1e-3 and loaded.meta == module.meta
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_noisy_classifier_keeps_its_own_settings_through_a_checkpoint(tmp_path):
    module = NoisyClassifierModule(CNN, LINEAR, SHAPE, 10, val_repeats=4, warmup_steps=7)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "m.ckpt")
    loaded = load_module(tmp_path / "m.ckpt")
    assert loaded.hparams.val_repeats == 4 and loaded.hparams.warmup_steps == 7 and loaded.noisy


def test_constructors_refuse_what_they_do_not_use():
    with pytest.raises(TypeError, match="shared base"):
        ClassifierModule(CNN, LINEAR, SHAPE, 10)
    with pytest.raises(TypeError, match="kind"):
        DDPMModule(UNET, LINEAR, SHAPE, kind="ddpm")
    with pytest.raises(TypeError, match="val_repeats"):
        EvalClassifierModule({**CNN, "time_conditioned": False}, LINEAR, SHAPE, 10, val_repeats=2)


class LogRecorder:
    def __init__(self):
        self.logged = {}

    def log(self, name, value, **options):  # LightningModule.log's options (sync_dist, ...) do not change the value
        self.logged[name] = float(value)


def test_quartile_metrics_route_each_sample_to_its_noise_quartile():
    T = 100
    timesteps = torch.tensor([0, 24, 25, 49, 50, 99, 99])
    values = torch.tensor([1.0, 3.0, 10.0, 20.0, 7.0, 100.0, 200.0])
    assert noise_quartile(timesteps, T).tolist() == [0, 0, 1, 1, 2, 3, 3]
    metrics = QuartileMetrics("val/loss", MeanMetric, T)
    metrics.update(timesteps[:4], values[:4])
    metrics.update(timesteps[4:], values[4:])
    recorder = LogRecorder()
    metrics.log_and_reset(recorder)
    assert recorder.logged == {"val/loss_q0": 2.0, "val/loss_q1": 15.0, "val/loss_q2": 7.0, "val/loss_q3": 150.0}

    assert [int(samples.compute()) for samples in metrics.samples] == [0, 0, 0, 0]  # reset with the metrics

    metrics.update(torch.tensor([10]), torch.tensor([5.0]))  # a new epoch starts from nothing
    recorder = LogRecorder()
    metrics.log_and_reset(recorder)
    assert recorder.logged == {"val/loss_q0": 5.0}  # quartiles without samples are not logged


def quartile_rank(rank: int, init_file: str, results) -> None:
    """One DDP rank: rank 0 sees only low-noise samples, rank 1 low- and high-noise ones."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = QuartileMetrics("val/loss", MeanMetric, 100)
        timesteps = torch.tensor([0, 1]) if rank == 0 else torch.tensor([2, 99])
        metrics.update(timesteps, torch.tensor([1.0, 3.0]) if rank == 0 else torch.tensor([5.0, 40.0]))
        recorder = LogRecorder()
        metrics.log_and_reset(recorder)
        results.put((rank, recorder.logged))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~50 s on 2 busy cores
def test_quartile_metrics_agree_across_ranks_when_a_rank_saw_no_samples_of_a_quartile(tmp_path):
    """compute() gathers across ranks, so every rank must compute the same quartiles, or DDP hangs."""
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=quartile_rank, args=(rank, str(tmp_path / "init"), results)) for rank in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        logged = dict(results.get(timeout=180) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    expected = {"val/loss_q0": 3.0, "val/loss_q3": 40.0}  # q0 gathered from both ranks: mean of 1, 3, 5
    assert logged == {0: expected, 1: expected}
