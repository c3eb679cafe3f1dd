"""Data-parallel training (pipeline/distributed.py): one process takes today's path untouched; N processes
(CPU, gloo) train what one process trains, only the writer writes, a killed run resumes, a failing rank
ends the stage with one line, and two torchrun agents on 127.0.0.1 act as two machines.

Every test that starts processes waits with a timeout and, on leaving, kills what it started and is still
running (its own pids: the stage and the workers it started, found while they ran)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from ruamel.yaml import YAML

from pipeline import distributed
from pipeline.data.parsed import ParsedDataset
from pipeline.data.split import save_split
from pipeline.distributed import World
from pipeline.inference import Normalization, predict
from pipeline.models.checkpoint import load_model
from conftest import REPO_ROOT, call_stage, dump_params, one_error, set_keys

STAGE_TIMEOUT_S = 600  # a stage run that takes longer is killed (with its workers) and the test fails
# sitecustomize for the stage processes: records, per process, every file it opens for writing, creates,
# renames or removes under $AUDIT_OUT (Python's audit hooks), so a test sees which rank wrote what.
AUDIT_HOOK = """
import os, sys
OUT, LOG = os.environ["AUDIT_OUT"], os.environ["AUDIT_LOG"]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT
EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"}
def hook(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        writes = (args[1] and any(c in args[1] for c in "wax+")) or (args[2] or 0) & WRITE
    elif event in EVENTS:
        writes = True
    else:
        return
    path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
    if writes and os.path.abspath(path).startswith(OUT):
        with open(LOG, "a") as f:
            f.write(f"{os.environ.get('RANK', 'launcher')}\\t{event}\\t{path}\\n")
sys.addaudithook(hook)
"""


# ---------------------------------------------------------------- helpers

@pytest.fixture
def stage(stage_dir: Path) -> Path:
    """stage_dir (the synthetic set: 360 training images) with a checkpoint after every epoch, fp32 everywhere
    (bf16, `auto` on some CPUs, rounds too coarsely to compare runs)."""
    params = YAML(typ="safe").load((stage_dir / "params.yaml").read_text())
    params["checkpoint_every_s"] = 0.0
    for section in params["models"].values():
        section["precision"] = "fp32"
    dump_params(params, stage_dir / "params.yaml")
    return stage_dir


def with_params(d: Path, name: str, **changes: Any) -> Path:
    """d/params.yaml with dotted keys changed ('models.mlp.lr': ...), written to d/<name>."""
    return dump_params(set_keys(YAML(typ="safe").load((d / "params.yaml").read_text()), changes), d / name)


def train_args(d: Path, params: Path, out: str, model: str = "mlp") -> list[str]:
    return ["--model", model, "--parsed", str(d / "parsed"), "--split", str(d / "split"),
            "--out", str(d / out / f"{model}.pt"), "--live", str(d / out / "train"),
            "--checkpoint", str(d / out / "last.pt"), "--params", str(params)]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@contextmanager
def started(command: list[str], audit: Path | None = None, **popen: Any) -> Iterator[subprocess.Popen]:
    """A process of ours (stderr to a file: `proc.log`); on leaving, it and every process seen under it are
    gone: waited for, or killed (the test has failed then, or is killing on purpose). With `audit`, a folder,
    each process logs what it writes there to audit.parent / "writes.log"."""
    env = {**os.environ, **popen.pop("env", {})}
    if audit is not None:  # the hook and its log beside the folder it watches
        (audit.parent / "hook").mkdir(exist_ok=True)
        (audit.parent / "hook" / "sitecustomize.py").write_text(AUDIT_HOOK)
        env.update(PYTHONPATH=os.pathsep.join([str(audit.parent / "hook"), str(REPO_ROOT)]),
                   AUDIT_OUT=str(audit), AUDIT_LOG=str(audit.parent / "writes.log"))
    log = popen.pop("log")
    with open(log, "w") as err:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, **popen)
    proc.log = log  # type: ignore[attr-defined]
    proc.seen = {}  # type: ignore[attr-defined]  # pid -> psutil.Process of every descendant seen
    try:
        yield proc
    finally:
        leftovers = [p for p in [*proc.seen.values(), *descendants(proc.pid)] if alive(p)]
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for p in leftovers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch(proc: subprocess.Popen) -> None:
    """Note the processes now running under `proc` (workers start in sessions of their own)."""
    proc.seen.update({p.pid: p for p in descendants(proc.pid)})  # type: ignore[attr-defined]


def wait(proc: subprocess.Popen, timeout_s: float = STAGE_TIMEOUT_S, until: Any = None) -> str:
    """Wait for `proc` to end (or `until()` to be true), noting its workers; its stderr so far."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not (until and until()):
        watch(proc)
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s:\n{Path(proc.log).read_text()[-3000:]}"
        time.sleep(0.05)
    return Path(proc.log).read_text()


def run_train(d: Path, params: Path, out: str, model: str = "mlp", audit: bool = False, **env: str) -> str:
    """Run the train stage as DVC does; its stderr, after checking it succeeded."""
    args = [sys.executable, "-m", "src.train", *train_args(d, params, out, model)]
    with started(args, audit=d / out if audit else None, log=d / f"{out}.log", env=env) as proc:
        stderr = wait(proc)
    assert proc.returncode == 0, stderr
    return stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_accuracy(weights_path: Path, d: Path, synthetic: ParsedDataset, split: dict[str, np.ndarray]) -> float:
    model, meta = load_model(weights_path, torch.device("cpu"))
    norm = Normalization(**meta["normalization"])
    logits = predict(model, torch.from_numpy(synthetic.images[split["test"]]), norm, 256)
    return (logits.argmax(1).numpy() == synthetic.labels[split["test"]]).mean()


test_accuracy.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------- one process: today's path, untouched

def test_shares_tile_every_batch() -> None:
    """Each rank's share is contiguous, the shares cover a batch once, in order, equal when N divides it."""
    for size in (1, 2, 3, 4):
        for rows in (1, 7, 8, 64):
            shares = [World(rank=rank, size=size).share(rows) for rank in range(size)]
            assert [i for s in shares for i in range(s.start, s.stop)] == list(range(rows))
            if rows % size == 0:
                assert {s.stop - s.start for s in shares} == {rows // size}


def test_one_process_takes_the_single_process_path(stage: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """At nproc_per_node 1 the stage starts no worker, creates no process group, wraps nothing in DDP."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the single-process path touched torch.distributed")
    monkeypatch.setattr(distributed, "launch", forbidden)
    monkeypatch.setattr(torch.distributed, "init_process_group", forbidden)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", forbidden)
    monkeypatch.delenv("RANK", raising=False)
    params = with_params(stage, "one.yaml", **{"models.mlp.epochs": 1})
    code, err = call_stage("train", *train_args(stage, params, "one"), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    assert not torch.distributed.is_initialized()
    assert (stage / "one" / "mlp.pt").exists() and (stage / "one" / "train" / "metrics.json").exists()


@pytest.mark.parametrize(("changes", "fragments"), [
    ({"distributed.nproc_per_node": 3}, ["models.mlp.batch_size: 32 is not a multiple of the 3 training processes"]),
    ({"distributed.nproc_per_node": 2, "distributed.nnodes": 3},
     ["32 is not a multiple of the 6 training processes", "nproc_per_node x nnodes"]),
    ({"distributed.rdzv_endpoint": "node1"}, ["distributed.rdzv_endpoint", "is not host:port"]),
])
def test_refused_before_any_worker_starts(stage: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], changes: dict, fragments: list[str]) -> None:
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("workers started"))
    params = with_params(stage, "bad.yaml", **{"models.mlp.batch_size": 32, **changes})
    one_error(*call_stage("train", *train_args(stage, params, "bad"), capsys=capsys, monkeypatch=monkeypatch),
              *fragments)
    assert not (stage / "bad").exists()


# ---------------------------------------------------------------- N processes (CPU, gloo)

STEPS = 300  # optimizer steps of the comparisons: ~27 epochs of the synthetic set at batch 40
# N processes sum the same gradients in another order (each rank's share, then the all-reduce): after STEPS
# steps the weights of mlp and lenet agree within this (measured: see the assertion message when it fails).
ATOL = 1e-4


def comparison_params(d: Path, name: str, nproc: int) -> Path:
    """mlp without dropout (N ranks draw other dropout masks than one process) and lenet, STEPS steps."""
    return with_params(d, name, **{
        "distributed.nproc_per_node": nproc,
        "models.mlp.epochs": None, "models.mlp.steps": STEPS, "models.mlp.batch_size": 40,
        "models.mlp.arch.dropout": 0.0,
        "models.lenet.epochs": None, "models.lenet.steps": STEPS, "models.lenet.batch_size": 40})


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_two_processes_train_what_one_trains(stage: Path, synthetic: ParsedDataset,
                                            synthetic_split: dict[str, np.ndarray], model: str) -> None:
    """Same global batch, same images per step: N=2 ends within ATOL of N=1, test accuracy within 1e-3, and
    only rank 0 wrote (the launcher removed the checkpoint once done)."""
    run_train(stage, comparison_params(stage, "one.yaml", 1), "one", model)
    stderr = run_train(stage, comparison_params(stage, "two.yaml", 2), "two", model, audit=True)
    one, two = weights(stage / "one" / f"{model}.pt"), weights(stage / "two" / f"{model}.pt")
    worst = max((one[key] - two[key]).abs().max().item() for key in one)
    assert worst <= ATOL, f"{model}: weights differ by up to {worst:.2e}"
    accuracy = [test_accuracy(stage / out / f"{model}.pt", stage, synthetic, synthetic_split) for out in ("one", "two")]
    assert abs(accuracy[0] - accuracy[1]) <= 1e-3, accuracy
    assert json.loads((stage / "two" / "train" / "metrics.json").read_text())["best_epoch"] > 0
    # one progress bar, one closing log line, outputs from rank 0 alone
    assert stderr.count("best epoch") == 1 and stderr.count("device: cpu") == 1, stderr
    writes = [line.split("\t") for line in (stage / "writes.log").read_text().splitlines()]
    assert {rank for rank, _, _ in writes} == {"0", "launcher"}, writes
    assert [(event, Path(path).name) for rank, event, path in writes if rank == "launcher"] == [("os.remove", "last.pt")]
    assert not (stage / "two" / "last.pt").exists()


@pytest.mark.slow
def test_resnet_two_processes(stage: Path, synthetic: ParsedDataset, synthetic_split: dict[str, np.ndarray]) -> None:
    """resnet (BatchNorm: each rank normalises by its share; running statistics averaged at each epoch end)
    trains at N=2 and lands within noise of one process."""
    small = {"models.resnet.epochs": 4, "models.resnet.batch_size": 40, "models.resnet.lr": 3e-3,
             "models.resnet.arch": {"width": 8, "blocks": 2, "pool_after": [1, 2], "dropout": 0.0, "hidden": 32,
                                    "head_init_scale": 1e-3}}
    run_train(stage, with_params(stage, "one.yaml", **small), "one", "resnet")
    run_train(stage, with_params(stage, "two.yaml", **small, **{"distributed.nproc_per_node": 2}), "two", "resnet")
    accuracy = [test_accuracy(stage / out / "resnet.pt", stage, synthetic, synthetic_split) for out in ("one", "two")]
    assert min(accuracy) > 0.5 and abs(accuracy[0] - accuracy[1]) <= 0.1, accuracy  # 120 test images: +-0.1 is noise
    running = {key: value for key, value in weights(stage / "two" / "resnet.pt").items() if "running_var" in key}
    assert running and all(torch.isfinite(v).all() and (v > 0).all() for v in running.values())


def checkpoint_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


@pytest.mark.slow
def test_kill_a_worker_or_the_stage_then_resume(stage: Path) -> None:
    """SIGKILL rank 1: the stage ends within seconds with one line naming rank 1 and the signal, nothing
    written; rerun, SIGKILL the whole stage (its workers die with it); rerun: the weights are bit for bit
    those of an uninterrupted two-process run."""
    params = with_params(stage, "long.yaml", **{"distributed.nproc_per_node": 2, "models.mlp.epochs": 120,
                                                "models.mlp.batch_size": 40})
    run_train(stage, params, "reference")
    command = [sys.executable, "-m", "src.train", *train_args(stage, params, "run")]
    checkpoint = stage / "run" / "last.pt"

    with started(command, log=stage / "kill1.log") as proc:
        wait(proc, until=lambda: checkpoint_epoch(checkpoint) >= 1)
        workers = [p for p in proc.seen.values() if "src.train" in " ".join(p.cmdline())]
        rank1 = next(p for p in workers if p.environ().get("RANK") == "1")
        killed_at = time.monotonic()
        rank1.send_signal(signal.SIGKILL)
        stderr = wait(proc, timeout_s=120)
    assert time.monotonic() - killed_at < 60, "the stage took over a minute to notice a dead worker"
    one_error(proc.returncode, stderr, "rank 1 of 2", "killed by SIGKILL", "resume")
    assert not (stage / "run" / "mlp.pt").exists() and not (stage / "run" / "train").exists()
    assert not [p for p in workers if alive(p)]

    with started(command, log=stage / "kill2.log") as proc:
        resumed_from = checkpoint_epoch(checkpoint)
        wait(proc, until=lambda: checkpoint_epoch(checkpoint) > resumed_from + 1)
        workers = list(proc.seen.values())
        proc.send_signal(signal.SIGKILL)  # the whole stage, as `kill -9` of dvc's child would
        proc.wait(30)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in workers):
            assert time.monotonic() < deadline, "workers outlived their stage"
            time.sleep(0.1)
    assert "resuming from" in Path(stage / "kill2.log").read_text()

    stderr = run_train(stage, params, "run")
    assert "resuming from" in stderr
    reference, resumed = weights(stage / "reference" / "mlp.pt"), weights(stage / "run" / "mlp.pt")
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)
    history = [(stage / out / "train" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()
               for out in ("reference", "run")]
    assert [row.split("\t")[1:] for row in history[0]] == [row.split("\t")[1:] for row in history[1]]


@pytest.mark.slow
def test_two_machines_on_loopback(stage: Path, synthetic_split: dict[str, np.ndarray]) -> None:
    """Two torchrun agents, --nnodes 2, one process each, meet at a c10d rendezvous on a free 127.0.0.1 port:
    the stage (machine 1) and the command it prints for the others (machine 2). The run matches the
    two-process --standalone run; a machine 2 with another split is refused by both in one line."""
    standalone = with_params(stage, "standalone.yaml", **{"distributed.nproc_per_node": 2, "models.mlp.epochs": 5,
                                                          "models.mlp.batch_size": 40})
    # One thread per process everywhere: a matmul's sums run in another order on another thread count.
    run_train(stage, standalone, "standalone", OMP_NUM_THREADS="1")

    def machines(out: str, other_split: Path | None = None) -> tuple[subprocess.Popen, subprocess.Popen]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        params = with_params(stage, f"{out}.yaml", **{"distributed.nnodes": 2, "distributed.timeout_s": 60.0,
                                                      "distributed.rdzv_endpoint": f"127.0.0.1:{port}",
                                                      "models.mlp.epochs": 5, "models.mlp.batch_size": 40})
        first = stack.enter_context(started([sys.executable, "-m", "src.train", *train_args(stage, params, out)],
                                            log=stage / f"{out}-1.log", env={"OMP_NUM_THREADS": "1"}))
        printed = wait(first, 300, until=lambda: "run: torchrun" in Path(first.log).read_text())
        command = printed.split("run: torchrun", 1)[1].splitlines()[0].split()
        assert command[:8] == ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                               f"127.0.0.1:{port}"], command
        if other_split:
            command[command.index("--split") + 1] = str(other_split)
        second = stack.enter_context(started([sys.executable, "-m", "torch.distributed.run", *command],
                                             log=stage / f"{out}-2.log", env={"OMP_NUM_THREADS": "1"}))
        return first, second

    with ExitStack() as stack:
        first, second = machines("nodes")
        stderr = wait(first)
        assert first.returncode == 0, stderr
        assert wait(second, 120) is not None and second.returncode == 0, Path(second.log).read_text()
    print(f"--- machine 1 (the stage):\n{stderr}--- machine 2:\n{Path(second.log).read_text()}")
    a, b = weights(stage / "standalone" / "mlp.pt"), weights(stage / "nodes" / "mlp.pt")
    assert all(torch.equal(a[key], b[key]) for key in a), max((a[k] - b[k]).abs().max().item() for k in a)

    changed = {**synthetic_split, "train": synthetic_split["train"][:-1]}
    save_split(changed, stage / "other-split")
    with ExitStack() as stack:
        first, second = machines("mismatch", stage / "other-split")
        stderr = wait(first, 300)
        wait(second, 120)
    one_error(first.returncode, stderr, "trains other data or settings", "same commit with the same data")
    assert not (stage / "mismatch" / "mlp.pt").exists()
