"""The commands of README.md, run as a newcomer runs them: every line of its `bash` blocks, in order, in a
fresh clone of the project on tiny params (each model one epoch or two steps at a tiny width), with a
bare repository as `origin` and a folder as the DVC remote. Placeholders (`<url>`, `<name>`, the mirror
and remote paths) become real ones; a line that cannot run here is listed in SKIP with the reason. The
commands of docs/*.md are checked without running them: each `python -m` module, `make` target and `dvc`
command they name exists."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO_ROOT, SHARED_DATASETS, committed_params_dict

README = REPO_ROOT / "README.md"
BASH = re.compile(r"^```bash[ \t]*\n(.*?)^```", re.M | re.S)
SKIP = {  # line (comment stripped) -> why it is not run here
    "make test": "it runs this test suite, which is running now",
    "dvc artifacts get <url> mnist-5k-lenet":
        "needs a pushed registered lenet; tests/test_registry.py runs `dvc artifacts get` against a remote",
}
# Tiny versions of each model: small enough that every dvc command below trains in seconds.
TINY_ARCH = {"mlp": {"hidden": [32]}, "lenet": {"channels": [2, 4], "hidden": [16]},
             "resnet": {"width": 4, "blocks": 2, "pool_after": [1, 2], "hidden": 16},
             "eurnn": {"hidden": 8, "capacity": 2}, "lstm": {"hidden": 8}}


def commands(page: Path) -> list[str]:
    """Every command line of the page's ```bash blocks, its trailing comment removed, in order."""
    lines = []
    for block in BASH.findall(page.read_text()):
        block = re.sub(r"\s*\\\n\s*", " ", block)  # a line ending in \\ continues on the next
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def write_block_yaml(data: dict, path: Path) -> Path:
    """params.yaml in block style, as the committed file is written (DVC's `-S` rewrites it in place)."""
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.dump(data, path)
    return path


def tiny_params() -> dict:
    params = committed_params_dict()
    params["run"] = {"datasets": ["mnist-5k"], "models": ["mlp", "lenet"]}  # lenet: the README's predict uses it
    for name, section in params["models"].items():
        budget = {"epochs": 1, "steps": None} if section.get("epochs") else {"epochs": None, "steps": 2}
        section.update(budget, arch={**section.get("arch", {}), **TINY_ARCH.get(name, {})})
        for recipe in section.get("per_dataset", {}).values():  # a dataset's recipe stays, as tiny
            recipe.update(budget, arch={**recipe.get("arch", {}), **TINY_ARCH.get(name, {})})
    params["evaluate"].update(rotations=[0, 45], embedding_points=100)
    return params


def write_images(repo: Path) -> None:
    """`photo.jpg` and `photos/` (two PNGs) for the README's predict line: a bright stroke on a dark ground,
    in colour and another size than the training images, as a user's photos are."""
    from PIL import Image, ImageDraw

    (repo / "photos").mkdir()
    for path, size in ((repo / "photo.jpg", 64), (repo / "photos" / "a.png", 40), (repo / "photos" / "b.png", 28)):
        image = Image.new("RGB", (size, size), (20, 20, 30))
        ImageDraw.Draw(image).line([(size // 2, size // 5), (size // 2, 4 * size // 5)], fill=(240, 240, 240),
                                   width=max(2, size // 8))
        image.save(path)


class Shell:
    """Runs command lines with the test's Python first on PATH, as a user with .venv activated."""

    def __init__(self, home: Path) -> None:
        venv_bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
                    "GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.com",
                    "GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@example.com"}
        if SHARED_DATASETS.is_dir():  # the real-data mirror stands in for the network the README assumes
            self.env["MNIST_PIPELINE_MIRROR"] = str(SHARED_DATASETS)
        self.home = home

    def __call__(self, line: str, cwd: Path, timeout: float = 1200) -> str:
        start = time.monotonic()
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        print(f"{time.monotonic() - start:6.1f} s  {line}")  # shown when the test fails: where the time went
        assert done.returncode == 0, f"`{line}` failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr


def wait_for_queue(shell: Shell, repo: Path, timeout: float = 600) -> None:
    """`dvc queue start` returns at once: wait until no queued or running experiment is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = shell("dvc queue status", repo)
        if not re.search(r"\b(Queued|Running)\b", status):
            assert "Failed" not in status, status
            return
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def experiments(shell: Shell, repo: Path) -> set[str]:
    return set(shell("dvc exp ls --name-only", repo).split())


@pytest.mark.e2e
def test_readme_commands_run_in_a_fresh_clone(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    origin, repo, remote = tmp_path / "origin.git", tmp_path / "work", tmp_path / "remote"
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    shell(f"git clone -q --bare {shlex.quote(str(REPO_ROOT))} {origin}", tmp_path)
    shell(f"git clone -q {origin} {repo}", tmp_path)
    # The commit under test becomes the clone's main, pushed to origin as main (README compares with main).
    shell(f"git checkout -q -B main origin/{branch} && git push -q -u origin main", repo)
    shell("git symbolic-ref HEAD refs/heads/main", origin)  # what a teammate's clone checks out
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1])  # the test's environment, never rebuilt
    write_block_yaml(tiny_params(), repo / "params.yaml")
    write_images(repo)
    shell("dvc config --local core.analytics false && git commit -qam 'tiny params'", repo)

    replace = {"/path/to/mirror": str(SHARED_DATASETS), "/mnt/team/dvc/mnist": str(remote), "<url>": str(origin),
               "make run": "make -o .venv/.installed run"}  # -o: .venv exists; make must not rebuild it
    ran, skipped = [], dict(SKIP)
    before, grid = set(), set()
    for line in commands(README):
        if line in SKIP:
            continue
        if ("MNIST_PIPELINE_MIRROR" in line or "fashion-mnist]" in line) and not SHARED_DATASETS.is_dir():
            skipped[line] = f"no real-data mirror at {SHARED_DATASETS}"
            continue
        command = line
        for placeholder, value in replace.items():
            command = command.replace(placeholder, value)
        if "<name>" in command:  # one experiment of the grid queued last (`dvc exp ls` lists in no set order)
            assert grid, "no queued experiment to apply"
            command = command.replace("<name>", min(grid))
        if command.startswith("dvc exp run --queue"):
            before = experiments(shell, repo)
        cwd = tmp_path if command.startswith("git clone") else repo
        output = shell(command, cwd)
        ran.append(line)
        if command.startswith("dvc queue start"):
            wait_for_queue(shell, repo)
            grid = experiments(shell, repo) - before
        if "dvc exp run" in command and "--queue" not in command:
            # `dvc exp run` leaves its params in the workspace; each README line is an example of its own,
            # so the next starts from the committed (tiny) params again
            shell("git checkout -- params.yaml", repo)
        if command.startswith("git clone"):  # the teammate's clone holds every output: nothing to run
            assert "Data and pipelines are up to date" in shell("dvc status", tmp_path / "mnist"), output
    assert ran and set(ran) | set(skipped) == set(commands(README))
    metrics = json.loads((repo / "results" / "mnist-5k" / "mlp" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1


# ---------------------------------------------------------------- docs/*.md: what the commands name exists

def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), re.M))


def module_exists(name: str) -> bool:
    base = REPO_ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file() or (base / "__main__.py").is_file():
        return True
    import importlib.util

    return importlib.util.find_spec(name) is not None  # an installed module: venv, pytest, dvc


def dvc_parses(args: list[str]) -> bool:
    """Whether DVC's own command-line parser accepts `dvc <args>`: the command, its subcommand and flags."""
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            get_main_parser().parse_args(args)
    except (SystemExit, DvcParserError):
        return False
    return True


@pytest.mark.parametrize("page", sorted((REPO_ROOT / "docs").glob("*.md")) + [README],
                         ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_docs_commands_name_what_exists(page: Path) -> None:
    problems = []
    for line in commands(page):
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:  # a heredoc's or a loop's inner line: not a command of its own
                continue
            while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value prefixes
                words = words[1:]
            if len(words) >= 3 and words[0].endswith("python") and words[1] == "-m" and not module_exists(words[2]):
                problems.append(f"`{line}`: no module {words[2]}")
            if len(words) >= 2 and words[0] == "make" and not words[-1].startswith("-") and \
                    words[-1] not in makefile_targets():
                problems.append(f"`{line}`: no make target {words[-1]}")
            if len(words) >= 2 and words[0] == "dvc" and not dvc_parses(words[1:]):
                problems.append(f"`{line}`: DVC does not accept `{shlex.join(words)}`")
    assert not problems, f"{page.name}: " + "; ".join(problems)


def test_tiny_params_are_valid(tmp_path: Path) -> None:
    from pipeline.config import load_params

    params = load_params(write_block_yaml(tiny_params(), tmp_path / "params.yaml"))
    assert params.run.models == ["mlp", "lenet"] and all(
        (section.epochs or 0) <= 1 and (section.steps or 0) <= 2 for section in params.models.values())
    assert YAML(typ="safe").load((tmp_path / "params.yaml").read_text())["evaluate"]["rotations"] == [0, 45]


def test_the_static_checks_catch_a_wrong_command() -> None:
    assert dvc_parses(["exp", "show", "--only-changed", "--sort-by", "a.json:accuracy", "--sort-order", "desc"])
    assert not dvc_parses(["exp", "run", "--no-such-flag"]) and not dvc_parses(["no-such-command"])
    assert module_exists("tools.results_page") and not module_exists("tools.no_such_module")
    assert {"run", "test"} <= makefile_targets()
