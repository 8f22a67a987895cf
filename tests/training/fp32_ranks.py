"""Run by torchrun from ``test_distributed.py``: ``train_torch`` on each rank in fp32
(the jobs' bf16 autocast rounds rows packed differently differently), rank 0 writing
the losses (``loss``, and ``valLoss`` where evaluated) and DPO/KTO figures as JSON. Arguments: model
folder, dataset folder, out file, batch size, strategy, iterations and, optionally,
the objective (``sft``, ``dpo``, ``kto``), ``evalEvery``, ``packTokens`` and
``promptGradientTokens`` (a number or ``all``; default: ``TrainSpec``'s)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from milady_lab.training.backends.torch import train_torch
from milady_lab.training.callbacks import TrainingCallback
from milady_lab.training.spec import TrainSpec


class _Losses(TrainingCallback):
    def __init__(self) -> None:
        keys = ("loss", "valLoss", "rewardMargin", "logpsChosen", "klEstimate")
        self.losses: dict[str, list[float]] = {key: [] for key in keys}

    def on_metric(self, metric: dict[str, Any]) -> None:
        for key, values in self.losses.items():
            if key in metric:
                values.append(metric[key])


def _tokens(text: str) -> int | None:
    if not text:
        return TrainSpec.prompt_gradient_tokens
    return None if text == "all" else int(text)


def main(
    model: str,
    dataset: str,
    out: str,
    batch: str,
    strategy: str,
    iterations: str,
    objective: str = "sft",
    eval_every: str = "1000",
    pack_tokens: str = "0",
    prompt_gradient_tokens: str = "",
) -> None:
    dist.init_process_group("gloo")
    folder = Path(out).parent / f"rank-{dist.get_rank()}"
    spec = TrainSpec(
        job_id="fp32",
        backend="cpu",
        model=model,
        dataset_dir=Path(dataset),
        output_dir=folder / "adapter",
        checkpoint_dir=folder / "checkpoints",
        base_model_path=Path(model),
        iterations=int(iterations),
        batch_size=int(batch),
        learning_rate=1e-2,
        checkpoint_every=0,
        eval_every=int(eval_every),
        threads=1,
        cpu_bf16=False,
        strategy=strategy,
        objective=objective,
        pack_tokens=int(pack_tokens) or None,
        prompt_gradient_tokens=_tokens(prompt_gradient_tokens),
    )
    cb = _Losses()
    train_torch(spec, cb)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(cb.losses), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
