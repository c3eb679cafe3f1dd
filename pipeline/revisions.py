"""Revisions of a git repository read through git alone: commits, branches, tags, DVC experiments (kept by
DVC as refs refs/exps/<baseline[:2]>/<baseline[2:]>/<name>) and the workspace, each resolved from the name
a user types; the files each holds, read without checking anything out."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime import UserError

WORKSPACE = "workspace"  # DVC's name for the files on disk


@dataclass(frozen=True)
class Revision:
    name: str  # as the user wrote it
    commit: str | None  # None: the workspace

    @property
    def label(self) -> str:
        return self.name if self.commit is None or self.commit.startswith(self.name) else \
            f"{self.name} ({self.commit[:7]})"


class Repo:
    """Read-only access to the files of a git repository's revisions, the workspace included."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def find(cls, start: Path) -> Repo:
        top = git(start, "rev-parse", "--show-toplevel")
        if top.returncode:
            raise UserError(f"{start}: not inside a git repository; run compare in the project's clone")
        return cls(Path(top.stdout.strip()))

    def experiments(self) -> dict[str, list[str]]:
        """Experiment name -> commits of the refs of that name (several baselines may reuse one name)."""
        refs = git(self.root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/").stdout
        found: dict[str, list[str]] = {}
        for line in refs.splitlines():
            ref, commit = line.split()
            parts = ref.split("/")  # refs exps <2 hex> <38 hex> <name>; others (stash, exec, celery) skipped
            if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38:
                found.setdefault(parts[4], []).append(commit)
        return found

    def head(self) -> str | None:
        """The commit HEAD names; None in a repository without commits."""
        found = git(self.root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        return found.stdout.strip() if found.returncode == 0 else None

    def experiments_of(self, baseline: str) -> dict[str, str]:
        """Name -> commit of every experiment run on the commit `baseline`."""
        prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
        refs = git(self.root, "for-each-ref", "--format=%(refname) %(objectname)", prefix).stdout
        return {ref[len(prefix):]: commit for ref, commit in (line.split() for line in refs.splitlines())}

    def resolve(self, name: str) -> Revision:
        """A git revision, else a DVC experiment name, else one UserError saying what names are valid."""
        if name == WORKSPACE:
            return Revision(name, None)
        found = git(self.root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        if found.returncode == 0 and not name.startswith("-"):
            return Revision(name, found.stdout.strip())
        commits = sorted(set(self.experiments().get(name, [])))
        if len(commits) == 1:
            return Revision(name, commits[0])
        if commits:
            raise UserError(f"{name}: several experiments have this name ({', '.join(c[:7] for c in commits)}); "
                            "name one by its commit")
        raise UserError(f"{name}: no git revision or DVC experiment of that name (valid: a commit, branch or "
                        f"tag, an experiment from `dvc exp list`, or {WORKSPACE})")

    def read(self, revision: Revision, path: str) -> str | None:
        """The text of `path` (relative to the repository root) at `revision`; None if it has none."""
        if revision.commit is None:
            file = self.root / path
            return file.read_text() if file.is_file() else None
        shown = git(self.root, "cat-file", "blob", f"{revision.commit}:{path}")
        return shown.stdout if shown.returncode == 0 else None

    def files(self, revision: Revision, folder: str) -> list[str]:
        """Paths of every file under `folder` at `revision`, relative to the repository root."""
        if revision.commit is None:
            base = self.root / folder
            return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        listed = git(self.root, "ls-tree", "-r", "--name-only", revision.commit, "--", folder)
        return listed.stdout.splitlines()


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("git is not installed; compare reads revisions through git") from None
