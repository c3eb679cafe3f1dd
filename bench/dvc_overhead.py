"""Pipeline overhead: `dvc repro` with nothing to do, on this project and on synthetic pipelines, same run.

Measures, each the minimum of --repeats runs (the least disturbed by other work):
  1. `dvc --version` (interpreter + DVC's CLI start) and `dvc repro` with nothing changed, on this
     project as it stands (run `dvc repro` once first; the script refuses if anything is out of date);
  2. the same no-op `dvc repro` in throw-away repositories with trivial stages (`echo`), to separate
     what DVC costs per run, per stage and per dependency from what this project adds: one stage with
     one dependency; as many stages as this project with one dependency each; and as many stages as
     this project with its mean dependency count each;
  3. one rewrite of a small file in .dvc/tmp (DVC rewrites .dvc/tmp/rwlock 16 times per stage per
     repro) against the same rewrite on /dev/shm (tmpfs): the part of the cost that is the disk's.

    python -m bench.dvc_overhead [--repeats 5]

Goal (issue 6): <= 1.5 s for the no-op `dvc repro` of the full default matrix.

Results: docs/results.md; the breakdown: docs/architecture.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT
from bench.common import save_results

DVC = shutil.which("dvc") or sys.exit("error: dvc is not on PATH; activate the project's .venv first")


def timed(args: list[str], cwd: Path, repeats: int) -> float:
    """Minimum wall time of running `args` in `cwd`, which must succeed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def project_shape() -> tuple[int, int]:
    """(stages, dependency entries: files, folders and params files) of this project's pipeline."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = list(repo.index.stages)
        return len(stages), sum(len(stage.deps) for stage in stages)


def synthetic_repo(path: Path, stages: int, deps: int) -> Path:
    """A git + DVC repository with `stages` trivial stages of `deps` file dependencies each, reproduced."""
    path.mkdir()
    (path / "src").mkdir()
    for j in range(deps):
        (path / "src" / f"f{j}.py").write_text(f"# {j}\n")
    lines = ["stages:"]
    for i in range(stages):
        lines += [f"  s{i}:", f"    cmd: echo {i} > out{i}.txt", "    deps:"]
        lines += [f"      - src/f{j}.py" for j in range(deps)] + ["    outs:", f"      - out{i}.txt"]
    (path / "dvc.yaml").write_text("\n".join(lines) + "\n")
    for args in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "config", "core.analytics", "false"],
                 [DVC, "repro", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "x"]):
        subprocess.run(args, cwd=path, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def rewrite_ms(directory: Path, count: int = 200) -> float:
    """Milliseconds per truncate-and-rewrite of a ~100-byte file in `directory`, as DVC's rwlock does."""
    path = directory / f"bench-rewrite-{os.getpid()}"
    text = json.dumps({"read": {"x" * 60: [{"pid": 1, "cmd": "dvc repro"}]}})
    path.write_text(text)
    start = time.perf_counter()
    for _ in range(count):
        with open(path, "w") as f:
            f.write(text)
    elapsed = time.perf_counter() - start
    path.unlink()
    return 1000 * elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    status = subprocess.run([DVC, "status", "-q"], cwd=ROOT)
    if status.returncode:
        sys.exit("error: the pipeline is not up to date; run `dvc repro` first, then this benchmark")

    stages, deps = project_shape()
    version = timed([DVC, "--version"], ROOT, args.repeats)
    ours = timed([DVC, "repro", "-q"], ROOT, args.repeats)
    print(f"DVC {subprocess.run([DVC, '--version'], capture_output=True, text=True).stdout.strip()}; "
          f"min of {args.repeats}")
    print(f"`dvc --version`                               {version:6.2f} s")
    print(f"no-op `dvc repro`, this project               {ours:6.2f} s   ({stages} stages, {deps} dependency "
          f"entries; goal <= 1.5 s)")

    mean_deps = round(deps / stages)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        one = timed([DVC, "repro", "-q"], synthetic_repo(tmp / "one", 1, 1), args.repeats)
        wide = timed([DVC, "repro", "-q"], synthetic_repo(tmp / "wide", stages, 1), args.repeats)
        full = timed([DVC, "repro", "-q"], synthetic_repo(tmp / "full", stages, mean_deps), args.repeats)
    per_stage = (wide - one) / (stages - 1)
    per_dep = (full - wide) / (stages * (mean_deps - 1))
    print(f"no-op `dvc repro`, 1 trivial stage, 1 dep     {one:6.2f} s")
    print(f"no-op `dvc repro`, {stages} stages x 1 dep          {wide:6.2f} s   -> {1000 * per_stage:.0f} ms per stage")
    print(f"no-op `dvc repro`, {stages} stages x {mean_deps} deps        {full:6.2f} s   -> {1000 * per_dep:.1f} ms "
          f"per dependency entry")
    model = one + (stages - 1) * per_stage + (deps - stages) * per_dep
    print(f"model for this project: {one:.2f} + {stages - 1} x {per_stage:.3f} + {deps - stages} x {per_dep:.4f} "
          f"= {model:.2f} s (measured {ours:.2f} s)")

    disk = rewrite_ms(ROOT / ".dvc" / "tmp")
    shm = rewrite_ms(Path("/dev/shm")) if Path("/dev/shm").is_dir() else None
    line = f"rewrite of a small file: .dvc/tmp {disk:.3f} ms"
    if shm is not None:
        line += f", /dev/shm {shm:.3f} ms"
    print(line + f"; DVC rewrites .dvc/tmp/rwlock 16 times per stage: {16 * stages * disk / 1000:.2f} s here")
    save_results("dvc_overhead", {
        "dvc": subprocess.run([DVC, "--version"], capture_output=True, text=True).stdout.strip(),
        "`dvc --version`, s": round(version, 2),
        f"no-op `dvc repro`, this project ({stages} stages, {deps} dependency entries; goal <= 1.5), s": round(ours, 2),
        "no-op `dvc repro`, 1 trivial stage x 1 dependency, s": round(one, 2),
        f"no-op `dvc repro`, {stages} trivial stages x 1 dependency, s": round(wide, 2),
        f"no-op `dvc repro`, {stages} trivial stages x {mean_deps} dependencies, s": round(full, 2),
        "per stage, ms": round(1000 * per_stage, 1), "per dependency entry, ms": round(1000 * per_dep, 2),
        "rewrite of a small file in .dvc/tmp, ms": round(disk, 3),
        "rewrite of a small file in /dev/shm, ms": None if shm is None else round(shm, 3)})


if __name__ == "__main__":
    main()
