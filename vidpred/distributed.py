"""Data-parallel training under `torchrun`: one process per device, DistributedDataParallel, rank 0 writes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them every helper here is the identity of a
single process, so the training loop reads the same either way. The global batch stays as
configured: each of N ranks takes batch_size / N clips of it (the data loader's `rank`/`world`), and
gradients are averaged over ranks, which is the gradient of the global batch's mean loss.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .devices import resolve_device
from .errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device
    local: int = 0  # the rank among the processes of this node (torchrun's LOCAL_RANK)

    @property
    def main(self) -> bool:
        """Rank 0: the only process that prints, logs and writes files."""
        return self.rank == 0


def setup(*, device: str, batch_size: int | None = None) -> Ranks:
    """This process's rank and device; joins the process group when started by torchrun.

    Refuses a global batch that the ranks cannot split evenly (before anything is written).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size is not None and batch_size % world:
        raise ConfigError(f"batch_size={batch_size} is the global batch and must split evenly over the {world} "
                          f"processes torchrun started (each takes batch_size / {world}); use a multiple of {world}")
    resolved = resolve_device(device)
    if world == 1:
        return Ranks(0, 1, resolved)
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if resolved.type == "cuda":  # one GPU per process; NCCL for the collectives
        resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
        dist.init_process_group("nccl", device_id=resolved, timeout=timedelta(minutes=30))
    else:
        dist.init_process_group("gloo", timeout=timedelta(minutes=30))
    return Ranks(rank, world, resolved, local)


def teardown(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(module: nn.Module, ranks: Ranks) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when there are several ranks (itself otherwise).

    Gradients are averaged across ranks during the backward pass of a forward that went through
    the wrapper; every parameter must receive a gradient each step (no unused-parameter search).
    """
    if ranks.world == 1:
        return module
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def sum_over_ranks(values: Tensor, ranks: Ranks) -> Tensor:
    """Element-wise sum over ranks of a small tensor (itself with one rank)."""
    if ranks.world > 1:
        values = values.to(ranks.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def gather_rows(rows: Tensor, ranks: Ranks) -> Tensor:
    """(n, ...) on every rank -> (world * n, ...) in rank order: the global batch's rows, in the
    order one process would hold them."""
    if ranks.world == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(ranks.world)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


@contextmanager
def local_first(ranks: Ranks):
    """Run the body on each node's first process, then on the others: what the first one builds and
    caches (a video folder's index) the others read instead of building it again, at the same time."""
    if ranks.world > 1 and ranks.local != 0:
        dist.barrier()  # released once every node's first process has been through the body
    yield
    if ranks.world > 1 and ranks.local == 0:
        dist.barrier()


def gather_objects(obj, ranks: Ranks) -> list:
    """Every rank's `obj` (picklable), in rank order; [obj] with one rank."""
    if ranks.world == 1:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


class StopRequest:
    """Turns SIGINT (Ctrl-C) and SIGTERM (schedulers, torchrun forwarding one) into a request that the
    training loop honours after the current step: it saves a checkpoint and leaves cleanly.

    Repeated signals only repeat the request: under torchrun a Ctrl-C reaches each worker twice
    (from the terminal and forwarded by the agent), and the save must not be cut short.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        for s in self.SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals to whoever owns them
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training after it saved a checkpoint; `--resume` goes on from there."""

    def __init__(self, signum: int, step: int, path: Path):
        self.signum, self.step, self.path = signum, step, path
        super().__init__(f"{signal.Signals(signum).name} stopped training after step {step}; saved {path}; "
                         "the same command with --resume goes on from there")
