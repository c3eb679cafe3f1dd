"""A team shares one repository: a bare git `origin`, a DVC remote and two clones, A and B.

A trains and pushes (git, then `dvc push --run-cache`); B clones and `dvc pull`s, after which nothing is
out of date; B runs an experiment and `dvc exp push`es it; A `dvc exp pull`s it, sees its metrics and
applies it without training. The same sequence runs against a local-folder remote and against a WebDAV
server (wsgidav) that the test starts on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DATASET, another_value, committed_params_dict, dvc, git_commit, run, stages_run

pytestmark = pytest.mark.e2e
METRICS = f"results/{DATASET}/mlp/metrics.json"
WEIGHTS = f"models/{DATASET}/mlp.pt"


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd)


def clone(origin: Path, into: Path) -> Path:
    git("clone", "-q", str(origin), str(into), cwd=origin.parent)
    git("config", "user.name", into.name, cwd=into)  # `dvc exp run` commits the experiment
    git("config", "user.email", f"{into.name}@example.com", cwd=into)
    return into


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def webdav_url(tmp_path: Path) -> Iterator[str]:
    """A WebDAV server (wsgidav, anonymous read-write) serving a temporary folder on 127.0.0.1 only."""
    wsgidav = Path(sys.executable).parent / "wsgidav"
    if not wsgidav.exists():
        pytest.skip("WebDAV server not installed: pip install -r requirements.txt (wsgidav, dvc-webdav)")
    served = tmp_path / "webdav"
    (served / "storage").mkdir(parents=True)  # the remote's folder must exist, like a bucket
    port = free_port()
    log = (tmp_path / "wsgidav.log").open("w")
    server = subprocess.Popen([str(wsgidav), "--host", "127.0.0.1", "--port", str(port), "--root", str(served),
                               "--auth", "anonymous", "--no-config"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError) as error:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"WebDAV server did not start on 127.0.0.1:{port} ({error}): "
                                f"{(tmp_path / 'wsgidav.log').read_text()[-500:]}")
                time.sleep(0.1)
        yield f"webdav://127.0.0.1:{port}/storage"
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture(params=["local", "webdav"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":  # a shared folder: a mounted network drive looks the same to DVC
        return str(tmp_path / "storage")
    return request.getfixturevalue("webdav_url")


def test_two_clones_share_runs_and_experiments(tiny_trained_repo: Path, remote_url: str, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)

    # A adds the remote for everyone (.dvc/config is committed), pushes git, then the data and run-cache.
    a = tmp_path / "a"
    shutil.copytree(tiny_trained_repo, a, symlinks=True)
    git("config", "user.name", "a", cwd=a)
    git("config", "user.email", "a@example.com", cwd=a)
    dvc("remote", "add", "-d", "storage", remote_url, cwd=a)
    git_commit(a, "DVC remote")
    git("remote", "add", "origin", str(origin), cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    dvc("push", "--run-cache", cwd=a)

    # B clones and pulls: every output arrives, nothing is out of date, nothing reruns.
    b = clone(origin, tmp_path / "b")
    assert not (b / WEIGHTS).exists()
    dvc("pull", cwd=b)
    assert (b / WEIGHTS).read_bytes() == (a / WEIGHTS).read_bytes()
    assert json.loads(dvc("status", "--json", cwd=b)) == {}
    assert stages_run(dvc("repro", cwd=b)) == set()
    assert git("status", "--porcelain", cwd=b) == ""

    # B trains an experiment and pushes it: its git refs to origin, its outputs to the DVC remote.
    lr = another_value(committed_params_dict()["models"]["mlp"]["lr"], 0.4)
    ran = stages_run(dvc("exp", "run", "-S", f"models.mlp.lr={lr}", cwd=b))
    assert f"train@{DATASET}-mlp" in ran
    theirs = json.loads((b / METRICS).read_text())
    dvc("exp", "push", "origin", cwd=b)

    # A pulls it and sees its metrics...
    dvc("exp", "pull", "origin", cwd=a)
    experiments = [exp for baseline in json.loads(dvc("exp", "show", "--json", cwd=a))
                   for exp in baseline.get("experiments") or []]
    assert len(experiments) == 1, experiments
    (rev,) = experiments[0]["revs"]
    assert rev["data"]["params"]["params.yaml"]["data"]["models"]["mlp"]["lr"] == lr
    assert rev["data"]["metrics"][METRICS]["data"]["accuracy"] == theirs["accuracy"]

    # ...and applies it: its outputs come from the remote, so reproducing runs no stage.
    dvc("exp", "apply", experiments[0]["name"], cwd=a)
    assert stages_run(dvc("repro", cwd=a)) == set()
    assert json.loads((a / METRICS).read_text()) == theirs
    assert (a / WEIGHTS).read_bytes() == (b / WEIGHTS).read_bytes()
