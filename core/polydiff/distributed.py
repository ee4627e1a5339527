"""Several processes on one job: the rank helpers sharded sampling needs, and a local launcher.

Training runs on many devices through Lightning's strategies (``train.strategy: ddp``,
``train.devices``, ``train.num_nodes``). Sampling shards itself: when a process group is up
(``torchrun``, SLURM, or :func:`launch`), :meth:`polydiff.Generator.generate_to` gives each
rank its own chunks of the request, every chunk seeded per sample exactly as in a
single-process run, and rank 0 merges the parts, so the files are the same bytes as those of
one process with the same batch size.

- :func:`world` -- ``(rank, size)`` of the process group (``(0, 1)`` without one);
- :func:`init_from_env` -- join the group the launcher describes (``RANK`` / ``WORLD_SIZE`` /
  ``MASTER_ADDR`` / ``MASTER_PORT``, as set by ``torchrun`` or :func:`launch`; SLURM's
  variables are read too); NCCL when each local process has a GPU of its own, else gloo;
- :func:`launch` -- run one command line in N local processes with those variables set
  (``polydiff sample --processes N``): a small ``torchrun --standalone``;
- :func:`agree` -- every rank learns whether all ranks succeeded, so a failure on one rank is
  an error on all instead of a hang at the next collective.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import RankFailed

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _env_int(*names: str) -> int | None:
    for name in names:
        if name in os.environ:
            try:
                return int(os.environ[name])
            except ValueError:
                raise ValueError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None
    return None


def init_from_env() -> bool:
    """Join the process group described by the environment, if it describes one of two or more
    processes; returns whether a group is up. ``RANK`` / ``WORLD_SIZE`` (torchrun, :func:`launch`)
    or ``SLURM_PROCID`` / ``SLURM_NTASKS``; ``MASTER_ADDR`` / ``MASTER_PORT`` must be set."""
    if dist.is_initialized():
        return True
    size = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    if size is None or size < 2:
        return False
    rank = _env_int("RANK", "SLURM_PROCID")
    if rank is None or not 0 <= rank < size:
        raise ValueError(f"WORLD_SIZE={size} but RANK is {rank}: launch with torchrun, srun or --processes")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE={size} but {name} is not set: launch with torchrun, srun or --processes")
    chosen = backend(size)
    if chosen == "nccl":  # object collectives run on the current device: make it this rank's own
        torch.cuda.set_device(local_device())
    dist.init_process_group(chosen, rank=rank, world_size=size)
    return True


def backend(size: int) -> str:
    """NCCL when every process of this node has a GPU of its own, else gloo: NCCL refuses two
    ranks on one GPU, while gloo lets several processes share one (each still computes on
    :func:`local_device`). The node's processes: ``LOCAL_WORLD_SIZE`` (torchrun, :func:`launch`),
    else the world ``size``."""
    if not torch.cuda.is_available():
        return "gloo"
    local = _env_int("LOCAL_WORLD_SIZE") or size
    return "nccl" if torch.cuda.device_count() >= local else "gloo"


def local_device() -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when there are GPUs, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    return torch.device("cuda", local % torch.cuda.device_count())


def share(value: T | None, src: int = 0) -> T:
    """``value`` of rank ``src`` on every rank (a picklable object; the value itself without a group)."""
    if world()[1] == 1:
        return value  # type: ignore[return-value]
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def agree(error: BaseException | None, what: str) -> None:
    """Collective: raise on every rank when any rank failed (``error`` not None). The failing
    rank re-raises its own error; the others raise :class:`RankFailed` naming it. ``what``: the
    phase, for the message."""
    size = world()[1]
    if size == 1:
        if error is not None:
            raise error
        return
    msg = None if error is None else f"{type(error).__name__}: {error}"
    found: list[Any] = [None] * size
    dist.all_gather_object(found, msg)
    if error is not None:
        raise error
    bad = [(r, m) for r, m in enumerate(found) if m is not None]
    if bad:
        r, m = bad[0]
        raise RankFailed(f"{what} failed on rank {r} of {size}: {m}")


def run_on_rank0(fn: Callable[[], T], what: str) -> T:
    """``fn()`` on rank 0, its result shared with every rank; an exception there is raised on
    every rank (the original on rank 0)."""
    rank, _ = world()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # shared below, re-raised on every rank
            error = err
    agree(error, what)
    return share(result)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], processes: int, *, threads: int | None = None, poll: float = 0.05) -> int:
    """Run ``python -m polydiff.cli ARGV`` in ``processes`` local processes forming one group
    (gloo over 127.0.0.1, like ``torchrun --standalone``); returns the first non-zero exit code,
    else 0. When one process fails, the others are stopped. ``threads``: torch threads per
    process (default: the CPUs shared out, at least 1)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    threads = threads or max(1, (os.cpu_count() or 1) // processes)
    port = free_port()
    procs = []
    for rank in range(processes):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes),
               "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": str(threads)}
        procs.append(subprocess.Popen([sys.executable, "-m", "polydiff.cli", *argv], env=env))
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                _stop(procs)
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll)
    except BaseException:
        _stop(procs)
        raise


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """Terminate the processes still running and wait for all of them."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait()
