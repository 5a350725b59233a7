"""Several processes, one run: torch.distributed as launched by ``torchrun`` or ``accelerate launch``.

Nothing here is home-made communication: the launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` calls ``torch.distributed.init_process_group`` (NCCL on
CUDA, gloo on CPU) and returns a :class:`DistContext` the runner asks who does what:

* synthesis: every rank generates its share of the missing units (a unit's images depend only on its seed,
  derived from (run seed, unit id), so the store is the same for any number of processes); rank 0 runs the
  method's ``finalize`` and writes the manifest once every rank is done;
* distillation: ``DistributedDataParallel`` over a sampler that splits each *global* batch across ranks
  (``distill.batch_size`` is the global batch), evaluation split and gathered;
* files that all ranks need (teacher training, teacher accuracy cache, store manifest, run folder) are made
  by rank 0 first (:meth:`DistContext.main_first`); only rank 0 writes records, reports and leaderboards.

A single process (no launcher, or ``WORLD_SIZE=1``) gets ``DistContext()`` — rank 0 of 1 — and every
collective below is a no-op, so the runner has one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from dfkd.errors import UserError

TIMEOUT_ENV = "DFKD_DIST_TIMEOUT_MIN"  # minutes a rank waits for the others (long rank-0 stages, e.g. metrics)
DEFAULT_TIMEOUT_MIN = 180


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job. The default is the single-process job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops for one process) ----------------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (creating files, caches, downloads); the others run it afterwards."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, …]`` on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Mean over ranks of each (float) value; the same keys on every rank."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) into ``module`` on every rank, in place: what DDP does at the start
        of each forward, done where a module is used outside its DDP forward (evaluation, another model's step)."""
        if not self.enabled:
            return
        for buf in module.buffers():
            torch.distributed.broadcast(buf, src=0)

    def shard(self, items: list[Any]) -> list[Any]:
        """This rank's share of ``items``: every ``world_size``-th item, starting at ``rank``."""
        return items[self.rank :: self.world_size]


SINGLE = DistContext()


def from_env(env: dict[str, str] | None = None) -> DistContext:
    """The context the launcher's environment variables describe (without initialising anything)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e}); launch with torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not in [0, WORLD_SIZE={world}); launch with torchrun or accelerate launch")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def setup(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group the launcher prepared (if any); return the context and this rank's device.

    ``device`` is the run's ``--device``: ``auto`` / ``cuda`` give ``cuda:LOCAL_RANK`` under a launcher,
    ``cpu`` keeps every rank on the CPU (gloo). Called once per process; a second call returns the same.
    """
    ctx = from_env()
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not ctx.enabled:
        return ctx, resolve_device(device)
    if wants_cuda:
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu (gloo)")
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {ctx.local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                "use --nproc-per-node ≤ the number of GPUs"
            )
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise UserError("WORLD_SIZE > 1 but MASTER_ADDR is unset: launch with torchrun or accelerate launch")
        minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
        torch.distributed.init_process_group(
            backend=backend,
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(minutes=minutes),
            device_id=dev if backend == "nccl" else None,
        )
    return ctx, dev


def teardown(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier so no rank exits while others still talk)."""
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA device without CUDA is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but torch sees no CUDA device; use --device cpu")
    return device
