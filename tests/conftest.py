import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
# Imported before any test captures output: Lightning's loggers bind their stream handlers to sys.stderr at
# import time, and an import inside a capsys test would leave them writing to a closed capture stream.
import pytorch_lightning  # noqa: F401
from guidelab.apps.config import compose_config  # noqa: F401  (the tests' way to compose real configs)

os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch, tmp_path):
    """No test may reach W&B's servers or a user's W&B settings."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


BENCHMARKS = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def benchmark_script(name: str):
    """experiments/benchmarks/<name>.py as a module, imported as the scripts import one another (their folder on
    sys.path while it loads)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def tiny_train_overrides(out, task: str, steps: int = 3) -> list[str]:
    """A few steps of a real task config on digits, with small nets."""
    return [
        f"task={task}",
        f"paths.output_dir={out}",
        "logger=csv",
        f"+trainer.limit_train_batches={steps}",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "+trainer.limit_val_batches=1",
        "trainer.enable_model_summary=false",
        "data.batch_size=32",
    ]


@pytest.fixture
def compiled_graphs(monkeypatch) -> list[tuple[str, int | None]]:
    """Dynamo's graphs, counted without inductor: torch.compile (which nn.Module.compile calls) gets a backend
    that records each graph as (net class, batch rows of its first image input) and runs it eagerly."""
    graphs = []
    real_compile = torch.compile

    def counting_compile(target, *args, **kwargs):
        net = type(getattr(target, "__self__", target)).__name__  # nn.Module.compile hands over its bound _call_impl

        def backend(graph_module, example_inputs):
            rows = next((len(v) for v in example_inputs if isinstance(v, torch.Tensor) and v.dim() == 4), None)
            graphs.append((net, rows))
            return graph_module.forward
        return real_compile(target, backend=backend)

    monkeypatch.setattr(torch, "compile", counting_compile)
    return graphs
