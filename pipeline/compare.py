"""Is B better than A? Two revisions' (commits, branches, tags, DVC experiments, or the workspace) results
compared image by image from git alone, and groups of experiments that differ only in the seed summarised.

Everything read is git-tracked: results/<dataset>/<model>/correct.json (which test images were right),
metrics.json and details.json, and params.yaml. So it works in a fresh clone with an empty DVC cache and
no remote (revisions are resolved and read by pipeline/revisions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from ruamel.yaml import YAML, YAMLError

from pipeline.outcomes import Outcomes, decode
from pipeline.revisions import Repo, Revision
from pipeline.runtime import UserError
from pipeline.stats import ALPHA, Comparison, compare

NOT_SEED_NOISE = {"throughput_images_per_s"}  # measures the machine, not the model: no seed summary


@dataclass(frozen=True)
class ModelResults:
    outcomes: Outcomes
    metrics: dict  # metrics.json, {} where missing
    intervals: dict  # details.json's intervals, {} where missing (results older than the intervals)


def read_results(repo: Repo, revision: Revision, results: str, params: str) -> dict[str, ModelResults]:
    """'<dataset>/<model>' -> its results at `revision`, of the datasets and models its params.yaml runs (an
    experiment with `-S run.models=[mlp]` still holds the other models' older files); a revision without
    any is one UserError."""
    found = {}
    for path in repo.files(revision, results):
        parts = path[len(results) + 1:].split("/")
        if len(parts) != 3 or parts[2] != "correct.json":
            continue
        folder = path.rsplit("/", 1)[0]
        try:
            outcomes = decode(json.loads(repo.read(revision, path) or "null"))
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            raise UserError(f"{revision.label}: {path}: unreadable ({err})") from None
        found[f"{parts[0]}/{parts[1]}"] = ModelResults(
            outcomes, _json(repo, revision, f"{folder}/metrics.json"),
            _json(repo, revision, f"{folder}/details.json").get("intervals", {}))
    run = _run(repo, revision, params)
    if run is not None:
        found = {key: value for key, value in found.items() if key in run}
    if not found:
        raise UserError(f"{revision.label}: no {results}/<dataset>/<model>/correct.json there: no results of "
                        "this project's evaluate stage (run `dvc repro` and commit, or pick a later revision)")
    return found


def _run(repo: Repo, revision: Revision, params: str) -> set[str] | None:
    """'<dataset>/<model>' of every pair params.yaml's run: section lists; None where it lists none."""
    try:
        run = YAML(typ="safe").load(repo.read(revision, params) or "{}").get("run", {})
        return {f"{dataset}/{model}" for dataset in run["datasets"] for model in run["models"]}
    except (AttributeError, KeyError, TypeError, ValueError, YAMLError):
        return None


def _json(repo: Repo, revision: Revision, path: str) -> dict:
    try:
        data = json.loads(repo.read(revision, path) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def compare_revisions(a: dict[str, ModelResults], b: dict[str, ModelResults]) -> tuple[dict[str, Comparison],
                                                                                        list[str]]:
    """B against A for every dataset/model both hold: the comparisons, and one line per pair left out."""
    compared, notes = {}, []
    for key in sorted(a.keys() | b.keys()):
        if key not in b or key not in a:
            notes.append(f"{key}: only in {'A' if key in a else 'B'}, not compared")
            continue
        first, second = a[key].outcomes, b[key].outcomes
        if first.test_set != second.test_set:
            notes.append(f"{key}: refused: the test sets differ (A {first.test_set[:15]}, {len(first.correct)} "
                         f"images; B {second.test_set[:15]}, {len(second.correct)} images): another split, "
                         "dataset or dataset version, so the images cannot be paired")
            continue
        compared[key] = compare(first.correct, second.correct)
    return compared, notes


def render_pairs(a: Revision, b: Revision, compared: dict[str, Comparison], notes: list[str]) -> str:
    header = ["dataset/model", "A accuracy [95% CI]", "B accuracy [95% CI]", "B - A [95% CI]", "A only", "B only",
              "McNemar p", "verdict (B vs A)"]
    rows = [[key, c.a.format(), c.b.format(), c.difference.format(sign=True), str(c.table.second_only),
             str(c.table.first_only), f"{c.p:.3g}", c.verdict] for key, c in compared.items()]
    lines = [f"A = {a.label}, B = {b.label}", *_table(header, rows), *notes]
    if compared:
        lines += ["", ("Accuracy intervals: Wilson. B - A: Newcombe's paired interval. p: exact McNemar test on the "
                       "images only one of them got right (A only, B only). Each row is tested alone, at "
                       f"{ALPHA:.0%}; with many rows, expect some false alarms.")]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


# ---- seed groups ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    revision: Revision
    seed: object
    results: dict[str, ModelResults]


def params_at(repo: Repo, revision: Revision, params: str) -> dict:
    text = repo.read(revision, params)
    if text is None:
        raise UserError(f"{revision.label}: no {params} there")
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as err:
        raise UserError(f"{revision.label}: {params} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{revision.label}: {params} is not a mapping")
    return data


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def check_group(repo: Repo, revisions: list[Revision], params: str) -> list[tuple[Revision, object]]:
    """(revision, seed) of a group whose params differ only in `seed`; one UserError saying where not."""
    if len(revisions) < 2:
        raise UserError("a seed group needs at least two revisions")
    first = _flat(params_at(repo, revisions[0], params))
    seeds = [(revisions[0], first.get("seed"))]
    for revision in revisions[1:]:
        other = _flat(params_at(repo, revision, params))
        differ = sorted(key for key in first.keys() | other.keys() if key != "seed" and first.get(key) != other.get(key))
        if differ:
            raise UserError(f"{revision.label}: its params differ from {revisions[0].label}'s in {differ[0]}, not only "
                            "in seed; a seed group varies the seed alone")
        seeds.append((revision, other.get("seed")))
    repeated = {seed for _, seed in seeds if [s for _, s in seeds].count(seed) > 1}
    if repeated:
        raise UserError(f"seed {sorted(repeated, key=str)[0]} appears twice in the group; each member needs its own "
                        "seed (repeats would understate the spread)")
    return seeds


def find_groups(repo: Repo, params: str) -> tuple[list[list[Revision]], list[str]]:
    """The experiments run on HEAD, grouped by their params but the seed: every group of two or more seeds,
    and a note for each experiment left out as a repeat of another's params, seed included."""
    head = repo.head()
    groups: dict[str, dict[str, Revision]] = {}
    notes = []
    for name, commit in sorted(repo.experiments_of(head).items()) if head else []:
        revision = Revision(name, commit)
        flat = _flat(params_at(repo, revision, params))
        seed = json.dumps(flat.pop("seed", None), default=str)
        group = groups.setdefault(json.dumps(flat, sort_keys=True, default=str), {})
        if seed in group:
            notes.append(f"{name}: the same params as {group[seed].name}, seed included; left out")
        else:
            group[seed] = revision
    found = [list(group.values()) for group in groups.values() if len(group) > 1]
    if not found:
        raise UserError("no two experiments on HEAD differ only in seed; run a group with "
                        "`dvc exp run --queue -S seed=0,1,2` and `dvc queue start`, or name the revisions")
    return found, notes


def summarise_group(repo: Repo, revisions: list[Revision], params: str, results: str) -> str:
    """Mean and sample standard deviation of each headline metric across the seeds, beside the test set's
    95% interval half-width (mean over the seeds), per dataset/model; then each pair of models per dataset:
    the mean difference and in how many seeds McNemar's test detects it."""
    members = [Member(revision, seed, read_results(repo, revision, results, params))
               for revision, seed in check_group(repo, revisions, params)]
    members.sort(key=lambda m: (str(type(m.seed)), m.seed))
    names = ", ".join(f"{m.revision.name} (seed {m.seed})" for m in members)
    lines = [f"Seed group of {len(members)}: {names}"]
    header = ["dataset/model", "metric", "mean", "std (seeds)", "95% CI half-width (test set)"]
    rows, keys, notes = [], [], []
    for key in sorted(set.intersection(*(set(m.results) for m in members))):
        if len({m.results[key].outcomes.test_set for m in members}) > 1:
            notes.append(f"{key}: refused: the members' test sets differ")
            continue
        keys.append(key)
        first_row = True
        for metric in [k for k in members[0].results[key].metrics if k not in NOT_SEED_NOISE]:
            values = [m.results[key].metrics.get(metric) for m in members]
            if any(not isinstance(v, (int, float)) for v in values):
                continue
            widths = [(i[metric]["high"] - i[metric]["low"]) / 2 for i in (m.results[key].intervals for m in members)
                      if metric in i]
            rows.append([key if first_row else "", metric,
                         f"{np.mean(values):.4f}", f"{np.std(values, ddof=1):.4f}",
                         f"{np.mean(widths):.4f}" if len(widths) == len(members) else "-"])
            first_row = False
    lines += _table(header, rows) + notes + ["", "std: across the seeds (n - 1). Half-width: of each member's 95% "
                                         "test-set interval (Wilson, or bootstrap for loss and ECE), averaged."]
    lines += _group_pairs(members, keys)
    return "\n".join(lines) + "\n"


def _group_pairs(members: list[Member], keys: list[str]) -> list[str]:
    """Per dataset, each pair of models: mean B - A over the seeds, and the seeds where it is detectable."""
    lines = []
    by_dataset: dict[str, list[str]] = {}
    for key in keys:
        by_dataset.setdefault(key.split("/")[0], []).append(key.split("/")[1])
    for dataset, models in by_dataset.items():
        for i, model_a in enumerate(models):
            for model_b in models[i + 1:]:
                tests = [compare(m.results[f"{dataset}/{model_a}"].outcomes.correct,
                                 m.results[f"{dataset}/{model_b}"].outcomes.correct) for m in members]
                differences = [t.difference.estimate for t in tests]
                verdicts = [t.verdict for t in tests]
                lines.append(f"{dataset}: {model_b} - {model_a}: {np.mean(differences):+.4f} "
                             f"(std {np.std(differences, ddof=1):.4f} across seeds); {model_b} better in "
                             f"{verdicts.count('better')} of {len(tests)} seeds, worse in {verdicts.count('worse')} "
                             f"(exact McNemar, {ALPHA:.0%})")
    return ([""] + lines) if lines else []
