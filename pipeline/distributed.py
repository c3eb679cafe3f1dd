"""Data-parallel training over several processes or machines: torch.distributed, started by torchrun's agent.

At a world size of 1 (params.yaml's distributed.nproc_per_node x distributed.nnodes) none of this runs: no
process group, no collective, today's single-process code (`SINGLE`). Above 1, the train stage is the
launcher: `launch` runs torchrun's elastic agent in the stage's own process (as `torchrun` would), which
starts nproc_per_node workers, each the same stage command with RANK, WORLD_SIZE, LOCAL_RANK... set (the
nanoGPT test: a process is a worker when RANK is set). Each worker `joined` the process group (gloo on
CPUs, NCCL on GPUs, `cuda:LOCAL_RANK` each) and trains its share of every batch.

The writer (rank 0 unless the machine DVC runs on holds other ranks: the lowest rank of the stage's own
machine, see `_elect_writer`) alone logs, shows progress and writes. Every collective below is called by
every rank; none sits behind a writer-only test.

A worker that fails records one line (why, and whether it only lost a peer) in torchrun's per-worker error
file and exits quietly; the launcher turns the root failure into one `error:` line naming the rank. A dead
peer breaks the others' next collective (gloo: connection closed) or times out after distributed.timeout_s,
and the agent stops the rest: the stage ends in bounded time. Workers die with their agent (PDEATHSIG), so
a SIGKILLed stage leaves none behind.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pipeline.runtime import UserError, brief

log = logging.getLogger(__name__)

STAGE_NODE_ENV = "MNIST_PIPELINE_STAGE_NODE"  # set by `launch` for its workers: this machine keeps the outputs
PR_SET_PDEATHSIG = 1  # prctl(2)


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, which a scheduler or container may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class World:
    """This process's place among the training processes, and the collectives the training loop calls.

    `SINGLE` (size 1) is one process: every method is a no-op or returns its input, no torch.distributed."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    writer_rank: int = 0  # the one process that logs and writes

    @property
    def writer(self) -> bool:
        return self.rank == self.writer_rank

    def share(self, rows: int) -> slice:
        """This rank's contiguous share of `rows` (a global batch, the validation set): equal when the world
        size divides `rows`, else the first ranks get one row less."""
        return slice(rows * self.rank // self.size, rows * (self.rank + 1) // self.size)

    def sum(self, values: Tensor) -> Tensor:
        """`values` summed over the ranks (every rank gets the sum)."""
        if self.size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def agree(self, flag: bool) -> bool:
        """The writer's `flag`, on every rank (a decision that leads to a collective must be the same on all)."""
        if self.size == 1:
            return flag
        value = torch.tensor([int(flag)], device=_comm_device())
        dist.broadcast(value, src=self.writer_rank)
        return bool(value.item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order (None at size 1)."""
        if self.size == 1:
            return None
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def same_run(self, digest: str) -> None:
        """Refuse to train unless every rank holds the same run: `digest` (pipeline.resume.fingerprint: params
        section, seed, data and split) alike on all. Machines started by hand may hold other data or settings."""
        digests = self.gather(digest)
        if digests and len(set(digests)) > 1:
            other = next(rank for rank, seen in enumerate(digests) if seen != digests[self.writer_rank])
            raise UserError(f"rank {other} trains other data or settings than rank {self.writer_rank} (another "
                            "params.yaml, seed, dataset or split); run every machine at the same commit with the "
                            "same data (git pull, dvc pull)")

    def from_writer(self, obj: Any) -> Any:
        """The writer's `obj` on every rank (the writer alone reads the checkpoint: only its machine has it)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=self.writer_rank)
        return box[0]

    def average_buffers(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running mean and variance) over the ranks.

        On CPU each rank's BatchNorm normalises by its own share's statistics and updates its own running
        averages (there is no SyncBatchNorm for gloo); called at the end of each epoch, this makes the saved
        statistics the ranks' mean, the same on every rank. Under SyncBatchNorm (CUDA) they already agree."""
        if self.size == 1:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.size)

    def reseed(self, seed: int) -> None:
        """Give this rank its own stream of dropout draws, after the weights were initialised alike on all."""
        if self.size > 1:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0]))

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` (on `device`) as DistributedDataParallel: gradients averaged over the ranks in backward.
        BatchNorm becomes SyncBatchNorm on CUDA; buffers are not broadcast each step (average_buffers)."""
        if self.size == 1:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: `cuda:LOCAL_RANK` on GPUs, else `device`."""
        if self.size > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device


SINGLE = World()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def in_worker() -> bool:
    """Whether torchrun started this process (nanoGPT's `int(os.environ.get("RANK", -1)) != -1`)."""
    return int(os.environ.get("RANK", -1)) != -1


# ---------------------------------------------------------------- the launcher: the train stage at N > 1

def launch(command: Sequence[str], *, nproc_per_node: int, nnodes: int, rdzv_endpoint: str, run_id: str,
           timeout_s: float) -> None:
    """Run `command` (the stage itself) as nproc_per_node workers under torchrun's agent, in this process.

    One machine: `--standalone` (a rendezvous on a free local port, a fresh id: runs side by side never
    meet). Several: a c10d rendezvous at `rdzv_endpoint` with id `run_id`, where the other machines' agents
    (started by hand or by a scheduler) join. A failure becomes one UserError line naming the rank."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    standalone = nnodes == 1
    # torchrun's advice: threads per worker so the workers together use the cores once, not N times
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc_per_node)))
    os.environ[STAGE_NODE_ENV] = "1"
    config = LaunchConfig(
        min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc_per_node, run_id=uuid.uuid4().hex if standalone else run_id,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0" if standalone else rdzv_endpoint,
        rdzv_configs={"join_timeout": timeout_s, "timeout": timeout_s}, max_restarts=0, monitor_interval=0.1)
    if not standalone:
        log.info("waiting for %d more machine(s) at %s; on each, in a clone at this commit with the data pulled "
                 "(dvc pull), run: torchrun --nnodes %d --nproc-per-node %d --rdzv-backend c10d --rdzv-endpoint %s "
                 "--rdzv-id %s %s", nnodes - 1, rdzv_endpoint, nnodes, nproc_per_node, rdzv_endpoint, run_id,
                 " ".join(command[1:]))
    # The agent's own account of a failure (a banner and every rank's traceback) gives way to one line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, command[0])(*command[1:])
    except ChildFailedError as err:
        raise UserError(_failure_line(err, nproc_per_node * nnodes)) from None
    except RendezvousError as err:  # no peers within the timeout, an endpoint that cannot be reached
        raise UserError(f"distributed: the workers could not meet at the rendezvous ({brief(err, 160)}); "
                        "check distributed.rdzv_endpoint and that every machine started") from None


def _failure_line(err: Any, world_size: int) -> str:
    """The root cause among the failed workers: a failure of its own before one that only lost a peer, then
    the earliest. A worker killed by a signal left no error file: the signal is the cause."""
    def key(item: tuple[int, Any]) -> tuple[bool, float, int]:
        rank, failure = item
        info = _info(failure)
        # SIGTERM without an error file: the agent stopping a worker after another failed
        consequence = bool(info.get("peer")) if info else failure.exitcode == -signal.SIGTERM
        return consequence, float(info.get("time", failure.timestamp)), rank

    rank, failure = min(err.failures.items(), key=key)
    info = _info(failure)
    if info.get("message"):
        if info.get("traceback"):  # a bug, not a user's mistake: its traceback, once, from the root rank
            print(info["traceback"], file=sys.stderr, end="")
        return f"rank {rank} of {world_size}: {info['message']}"
    if failure.exitcode < 0:
        name = failure.signal_name()
        hint = " (out of memory, or killed by hand)" if name == "SIGKILL" else ""
        return (f"rank {rank} of {world_size}: killed by {name}{hint}; rerun `dvc repro` to resume from the last "
                "checkpoint")
    return f"rank {rank} of {world_size}: exited with status {failure.exitcode}"


def _info(failure: Any) -> dict[str, Any]:
    data = failure.error_file_data.get("message", {}) if isinstance(failure.error_file_data, dict) else {}
    return data.get("extraInfo", {}).get("pipeline", {}) if isinstance(data, dict) else {}


# ---------------------------------------------------------------- a worker

def quiet_worker() -> None:
    """Silence a worker's logging until it is known to be the writer (joined): the launcher has already
    said what every worker would say while it reads its inputs."""
    logging.getLogger().setLevel(logging.WARNING)


@contextmanager
def joined(world_size: int, device: torch.device, timeout_s: float) -> Iterator[World]:
    """This worker in the process group for the block (SINGLE, touching nothing, at `world_size` 1).

    On CPU each worker takes OMP_NUM_THREADS threads if set (the launcher sets cores // nproc_per_node, plain
    torchrun 1), else cores // local world size. A failure inside the block is recorded in
    torchrun's error file (for the launcher's one line) and ends the worker with status 2 (a user's
    mistake) or 1, without printing: the launcher speaks for all ranks."""
    if world_size == 1:
        yield SINGLE
        return
    _die_with_parent()
    world = World(rank=int(os.environ["RANK"]), size=world_size, local_rank=int(os.environ["LOCAL_RANK"]),
                  local_size=int(os.environ["LOCAL_WORLD_SIZE"]))
    try:
        started = int(os.environ["WORLD_SIZE"])
        if started != world_size:
            raise UserError(f"distributed: torchrun started {started} processes but params.yaml asks for "
                            f"{world_size} (nproc_per_node x nnodes); start as many, or let the stage start them")
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # else torch took that number
            torch.set_num_threads(max(1, cpu_cores() // world.local_size))
        backend = "nccl" if device.type == "cuda" else "gloo"
        world.device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        world = _elect_writer(world)
        if world.writer:  # the others stay quiet unless they fail (quiet_worker)
            logging.getLogger().setLevel(logging.INFO)
        else:
            warnings.filterwarnings("ignore")
        yield world
        dist.destroy_process_group()
    except BaseException as err:  # noqa: BLE001 (every failure of a worker becomes its error record)
        _record_failure(err)
        raise SystemExit(2 if isinstance(err, UserError) else 1) from None


def _elect_writer(world: World) -> World:
    """The lowest rank on the machine the stage runs on (its launcher set STAGE_NODE_ENV), so the outputs land
    where DVC looks for them; rank 0 when every machine was started by hand. A c10d rendezvous numbers the
    machines by host name, so the stage's machine need not hold rank 0."""
    here = os.environ.get(STAGE_NODE_ENV) == "1"
    candidate = torch.tensor([world.rank if here else world.size], device=_comm_device())
    dist.all_reduce(candidate, op=dist.ReduceOp.MIN)
    writer = int(candidate.item())
    return World(world.rank, world.size, world.local_rank, world.local_size, writer if writer < world.size else 0)


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this worker when its agent dies (torchrun starts workers in their own session,
    so a kill of the stage's process group does not reach them)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the agent died before the line above
            os._exit(1)


def _is_peer_failure(err: BaseException) -> bool:
    """A collective that failed because another rank went away (gloo: connection closed or reset) or hung."""
    text = str(err)
    return isinstance(err, dist.DistError) or any(
        mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out",
                                  "timed out", "gloo"))


def _record_failure(err: BaseException) -> None:
    """Write this worker's failure to torchrun's error file, in its format plus a one-line cause."""
    if isinstance(err, UserError):
        message, trace = str(err), None
    elif isinstance(err, KeyboardInterrupt):
        message, trace = "interrupted", None
    elif isinstance(err, torch.OutOfMemoryError):
        message, trace = f"out of memory ({brief(err)}); lower the model's batch_size", None
    elif _is_peer_failure(err):
        message, trace = f"lost contact with another rank ({brief(err, 160)})", None
    else:
        message, trace = brief(err, 160), traceback.format_exc()
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        print(f"error: rank {os.environ.get('RANK')}: {message}", file=sys.stderr)
        return
    info = {"message": message, "peer": _is_peer_failure(err) and not isinstance(err, UserError),
            "time": time.time(), "traceback": trace}
    with open(path, "w") as f:
        json.dump({"message": {"message": message, "extraInfo": {
            "py_callstack": trace or "", "timestamp": str(int(info["time"])), "pipeline": info}}}, f)
