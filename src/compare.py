"""Is B better than A? Compare two revisions' test results image by image, from git alone:
`python -m src.compare [A] [B]` (A, B: a commit, branch, tag, DVC experiment name or `workspace`;
default: HEAD against the workspace; one revision: it against the workspace). For each dataset/model
in both: both accuracies, B - A with its 95% interval, the exact McNemar p-value and a verdict.

`python -m src.compare --seeds [REV ...]`: a group of experiments that differ only in the seed (default:
every such group among the experiments on HEAD), summarised by mean and spread across the seeds."""

import argparse
from pathlib import Path

from pipeline.compare import compare_revisions, find_groups, read_results, render_pairs, summarise_group
from pipeline.revisions import WORKSPACE, Repo
from pipeline.runtime import UserError, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="*", metavar="REV", help="A and B (default: HEAD and workspace)")
    parser.add_argument("--seeds", action="store_true", help="summarise REVs (or each group on HEAD) as a seed group")
    parser.add_argument("--results", default="results", help="results folder, relative to the repository root")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to the repository root")
    args = parser.parse_args()

    repo = Repo.find(Path.cwd())
    if args.seeds:
        groups, notes = ([[repo.resolve(name) for name in args.revisions]], []) if args.revisions else \
            find_groups(repo, args.params)
        print("\n".join(summarise_group(repo, group, args.params, args.results) for group in groups), end="")
        print("".join(f"{note}\n" for note in notes), end="")
        return
    if len(args.revisions) > 2:
        raise UserError(f"compare takes two revisions, A and B, not {len(args.revisions)} (for a seed group: --seeds)")
    names = {0: ["HEAD", WORKSPACE], 1: [*args.revisions, WORKSPACE], 2: args.revisions}[len(args.revisions)]
    a, b = (repo.resolve(name) for name in names)
    results_a = read_results(repo, a, args.results, args.params)
    results_b = read_results(repo, b, args.results, args.params)
    compared, notes = compare_revisions(results_a, results_b)
    if not compared and not notes:
        raise UserError(f"{a.label} and {b.label} share no dataset/model")
    print(render_pairs(a, b, compared, notes), end="")


if __name__ == "__main__":
    run_stage(main)
