"""The torch side of training on several ranks: DDP or FSDP2 around the decoder, each
rank's share of the global batch, and the few collectives the loop needs.

With one process (no ``torch.distributed`` group) every method is the identity, so the
loop in ``torch.py`` reads the same either way.

Why the loss curve equals one process with the same global batch: every rank draws the
same global batch (``batch_indices`` over ``batchSize × world``) and takes its slice;
the assistant-token count of the whole global batch is agreed on first, so each rank's
summed loss is divided by it (times the world size, which DDP's gradient average
divides out again). The gradient is then the one-process gradient up to the order of
float sums. Every rank runs the same number of packed rows per step (the shorter ones
repeat a row with weight 0): FSDP gathers parameters on every forward, so the ranks'
forwards must pair up; DDP synchronises gradients on the last row only (``no_sync``).

- ``ddp``: each rank holds the whole (frozen) base and the LoRA weights; one all-reduce
  of the LoRA gradients per step. Memory per device: the full model.
- ``fsdp``: ``fully_shard`` on every decoder layer and on the decoder (FSDP2): base and
  LoRA weights, gradients and optimizer state are split over the ranks and each layer
  is gathered for its forward and backward. Memory per device: about 1/world of the
  layers plus one gathered layer; the cost is an all-gather per layer per pass. The
  (tied) token embedding stays whole on every rank.
"""

from __future__ import annotations

import contextlib
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .data import Packing
from .packed import Packed, row_loss_sum

#: A torch ``state_dict()``: torch's own form (``torch.optim.Optimizer.state_dict``'s
#: type), saved and loaded whole, never read here.
StateDict = dict[str, Any]


@dataclass
class Group:
    """This process's place among the ranks of a run (world 1: training alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "ddp"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls, backend: str, strategy: str) -> Group:
        """The group torchrun set up (``rank.py`` initialised it), or training alone."""
        import os

        on_cuda = backend == "cuda"
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls(strategy=strategy, device=torch.device("cuda" if on_cuda else "cpu"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if on_cuda else torch.device("cpu")
        if on_cuda:
            torch.cuda.set_device(device)
        return cls(dist.get_rank(), dist.get_world_size(), local, strategy, device)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def reporter(self) -> bool:
        """Whether this rank writes the job's progress, checkpoints and adapter."""
        return self.local_rank == 0

    @property
    def sharded(self) -> bool:
        return self.active and self.strategy == "fsdp"

    # -- setup ----------------------------------------------------------------------------
    def check_same_data(self, examples: list[Any]) -> None:
        """Every rank must draw from the same examples (machines each read their own copy
        of the dataset): a clear error instead of batches that silently differ."""
        if not self.active:
            return
        digest = 0
        for ex in examples:
            digest = zlib.crc32(array("q", ex.input_ids).tobytes(), digest)
        mine = torch.tensor([len(examples), digest], dtype=torch.long, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        if any(not torch.equal(t, every[0]) for t in every):
            from ...errors import InputError

            raise InputError(
                "the ranks read different training examples: every machine needs the same "
                f"dataset contents (rank {self.rank} has {len(examples)} examples)"
            )

    def place(self, model: Any, decoder: Any) -> Any:
        """Move the model to this rank's device and return the decoder to run forwards
        through: DDP or FSDP2 around it, or itself. Under FSDP ``fully_shard`` moves only
        each rank's shard to the device (the whole model never sits on one GPU)."""
        if not self.sharded:
            model.to(self.device)
            return self._ddp(decoder) if self.active else decoder
        from torch.distributed.fsdp import fully_shard

        for layer in decoder.layers:
            fully_shard(layer)
        embed = decoder.get_input_embeddings()
        # The embedding is tied to lm_head, which runs outside the decoder: kept whole.
        fully_shard(decoder, ignored_params={embed.weight})
        model.to(self.device)  # what fully_shard left: the embedding (and an untied lm_head)
        return decoder

    def _ddp(self, decoder: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # forward_sync_buffers=False: the only buffers (rotary frequencies) never change,
        # and a broadcast per forward would tie forwards to collectives.
        return DistributedDataParallel(decoder, device_ids=ids, forward_sync_buffers=False)

    # -- the step -------------------------------------------------------------------------
    def shard(self, indices: list[int]) -> list[int]:
        """This rank's contiguous slice of the global batch's example indices."""
        if not self.active:
            return indices
        per = len(indices) // self.world
        return indices[self.rank * per : (self.rank + 1) * per]

    def agree(self, n_labels: int, n_rows: int) -> tuple[int, int]:
        """The global batch's target count and the most rows any rank runs."""
        if not self.active:
            return n_labels, n_rows
        mine = torch.tensor([n_labels, n_rows], dtype=torch.long, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        stacked = torch.stack(every)
        return int(stacked[:, 0].sum()), int(stacked[:, 1].max())

    def total(self, *values: float) -> list[float]:
        """Sums over the ranks (loss sums, token counts)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(x) for x in t.tolist()]

    def sync(self, decoder: Any, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradients are synchronised on a step's last row only."""
        if self.sharded:
            decoder.set_requires_gradient_sync(last)
        elif self.active and not last:
            return decoder.no_sync()
        return contextlib.nullcontext()

    def rows(self, rows: list[Any], n_rows: int) -> Iterator[tuple[Any, float]]:
        """``n_rows`` rows with their weight: this rank's rows, then its last one again
        with weight 0 until every rank has run as many."""
        for i in range(n_rows):
            yield (rows[i], 1.0) if i < len(rows) else (rows[-1], 0.0)

    # -- evaluation -----------------------------------------------------------------------
    def evaluator(self, evaluate: Callable[..., float | None]) -> Callable[..., float | None]:
        """``evaluate`` itself alone; on several ranks each takes every world-th example
        and the sums are added up (stop requests are left to the step boundary, since
        one rank leaving mid-way would stall the others)."""
        if not self.active:
            return evaluate

        def sharded(decoder: Any, lm_head: Any, examples: list[Any], batch_size: int,
                    packing: Packing, device: torch.device, autocast: Any,
                    should_stop: Any = None) -> float | None:  # fmt: skip
            mine = examples[self.rank :: self.world]
            # A rank without a share runs a stand-in with weight 0, in step with the others.
            return self._evaluate(decoder, lm_head, mine or examples[:1], bool(mine),
                                  batch_size, packing, device, autocast)  # fmt: skip

        return sharded

    @torch.no_grad()
    def _evaluate(self, decoder: Any, lm_head: Any, examples: list[Any], counted: bool,
                  batch_size: int, packing: Packing, device: torch.device,
                  autocast: Any) -> float:  # fmt: skip
        decoder = getattr(decoder, "module", decoder)  # DDP's module: no hooks needed here
        decoder.eval()
        groups = [
            r
            for i in range(0, len(examples), max(1, batch_size))
            for r in packing.rows(examples[i : i + batch_size])
        ]
        _, n_rows = self.agree(0, len(groups))
        total = count = 0.0
        for group, weight in self.rows(groups, n_rows):
            row = Packed(group, device)
            weight *= float(counted)
            total += weight * float(row_loss_sum(decoder, lm_head, row, autocast))
            count += weight * row.n_labels
        total, count = self.total(total, count)
        return total / max(1.0, count)

    # -- saving ---------------------------------------------------------------------------
    @property
    def saves_alone(self) -> bool:
        """Whether the reporter can write a checkpoint without the others (not under
        FSDP, whose gather needs every rank: a cancel then keeps the last checkpoint)."""
        return not self.sharded

    def adapter_weights(self, model: Any) -> dict[str, torch.Tensor] | None:
        """The whole LoRA weights under FSDP (a collective: every rank calls it), in
        peft's file layout; None otherwise (``save_pretrained`` reads the model)."""
        if not self.sharded:
            return None
        from peft import get_peft_model_state_dict

        full = {
            name: p.full_tensor().detach().cpu() if hasattr(p, "full_tensor") else p.detach().cpu()
            for name, p in model.named_parameters()
            if p.requires_grad
        }
        return get_peft_model_state_dict(model, state_dict=full)

    def save_adapter(self, model: Any, folder: Path) -> None:
        """Write the adapter (``save_pretrained``) from the reporter; all ranks call it."""
        weights = self.adapter_weights(model)
        if self.reporter:
            Path(folder).mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(folder), **({"state_dict": weights} if weights else {}))

    def optimizer_state(self, model: Any, optimizer: Any) -> StateDict:
        """The optimizer state to checkpoint: whole (gathered) under FSDP."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=False)
        return {"fsdp": get_optimizer_state_dict(model, optimizer, options=opts)}

    def load_optimizer_state(self, model: Any, optimizer: Any, state: StateDict) -> None:
        """The inverse of ``optimizer_state`` (an FSDP checkpoint resumes under FSDP)."""
        if "fsdp" not in state:
            if self.sharded:
                from ...errors import InputError

                raise InputError("a ddp or one-device checkpoint cannot resume with fsdp")
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, state["fsdp"], options=opts)
