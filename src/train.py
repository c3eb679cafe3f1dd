"""Stage train: fit one model on one dataset (params: models.<model>, seed, device, distributed.nproc_per_node
and distributed.nnodes). Above one process it starts the workers itself (torchrun's agent; docs/scaling.md)."""

import argparse
import sys
from contextlib import nullcontext

import numpy as np
import torch

from pipeline import distributed
from pipeline.config import Params, TrainConfig, load_params
from pipeline.data.parsed import ParsedDataset, load_parsed
from pipeline.data.split import load_split
from pipeline.device import device_kind, for_device, out_of_memory_as_error, resolve_device, seed_everything
from pipeline.inference import Normalization
from pipeline.io import atomic_dir
from pipeline.models import create_model
from pipeline.models.checkpoint import save_model
from pipeline.resume import Checkpointing, fingerprint, remove_checkpoint
from pipeline.runtime import UserError, run_stage
from pipeline.training import train
from src import PARSED, SPLIT, stage_args


def main() -> None:
    args = stage_args(__doc__, text=("model",), optional=("checkpoint",), params=True,
                      model="model name: a section under models: in params.yaml", parsed=PARSED, split=SPLIT,
                      out="file for the trained weights (.pt)", live="directory for dvclive's training log",
                      checkpoint="last-state file to resume from (not a DVC output; removed when the stage completes)")

    if distributed.in_worker():
        distributed.quiet_worker()
    params = load_params(args.params)
    if args.model not in params.models:
        raise UserError(f"--model {args.model!r} has no section under models:; sections: {', '.join(params.models)}")
    processes = params.distributed
    device = resolve_device(params.device)
    data = load_parsed(args.parsed)
    # The settings that run: the section's per_dataset entry for this dataset applied, precision: auto and
    # augment_flip: auto resolved for this device and dataset; for the fingerprint, the training and the
    # saved metadata.
    config = for_device(params.models[args.model].on(data.name), device).for_dataset(data.keeps_label, data.name)
    split = load_split(args.split)
    if config.batch_size > len(split["train"]):
        raise UserError(f"models.{args.model}.batch_size: {config.batch_size} is more than the "
                        f"{len(split['train'])} training images of {data.name}; lower it")
    if config.batch_size % processes.world_size:
        raise UserError(f"models.{args.model}.batch_size: {config.batch_size} is not a multiple of the "
                        f"{processes.world_size} training processes (distributed.nproc_per_node x nnodes); "
                        "it is the global batch, split evenly among them")
    if processes.world_size > 1 and not distributed.in_worker():  # this process is the launcher
        distributed.launch([sys.executable, "-m", "src.train", *sys.argv[1:]],
                           nproc_per_node=processes.nproc_per_node, nnodes=processes.nnodes,
                           rdzv_endpoint=processes.rdzv_endpoint, run_id=f"{data.name}-{args.model}",
                           timeout_s=processes.timeout_s)
    else:
        with distributed.joined(processes.world_size, device, processes.timeout_s) as world:
            fit(args, params, config, data, split, world, world.device(device))
    if args.checkpoint and (processes.world_size == 1 or not distributed.in_worker()):  # all workers are done
        remove_checkpoint(args.checkpoint)


def fit(args: argparse.Namespace, params: Params, config: TrainConfig, data: ParsedDataset,
        split: dict[str, np.ndarray], world: distributed.World, device: torch.device) -> None:
    """Train on this process's device (`world`: one of several, or SINGLE); the writer saves the outputs."""
    norm = Normalization.fit(data.images[split["train"]])
    seed_everything(params.seed)  # before building: weight init is part of the run (alike on every rank)
    recipe = params.models[args.model].per_dataset.get(data.name, {})
    arch_key = f"models.{args.model}.per_dataset.{data.name}.arch" if "arch" in recipe else None
    model = create_model(args.model, data.image_shape, len(data.classes), arch_key=arch_key, **config.arch)
    world.reseed(params.seed)
    digest = fingerprint(args.model, config, params.seed, {"images": data.images, "labels": data.labels, **split},
                         device_kind(device), world.size)
    world.same_run(digest)
    checkpoint = args.checkpoint and Checkpointing(args.checkpoint, digest, params.checkpoint_every_s)
    # The dvclive log is built beside its place and appears whole only once the weights are saved: a run
    # that fails (or diverges) leaves neither. The other ranks train their shares and write nothing.
    live = atomic_dir(args.live) if world.writer else nullcontext("")
    with live as live_dir, out_of_memory_as_error(f"models.{args.model}.batch_size: {config.batch_size}"):
        train(model, data.images, data.labels, split, config, norm=norm, device=device, seed=params.seed,
              live_dir=live_dir, desc=f"{data.name}/{args.model}", checkpoint=checkpoint, world=world)
        if not world.writer:
            return
        save_model(args.out, model, meta={
            "model": args.model, "arch": dict(config.arch), "dataset": data.name, "classes": data.classes,
            "image_shape": list(data.image_shape), "normalization": norm.to_dict(),
            "precision": config.precision, "augment_flip": config.augment_flip,
            "augment_shift": config.augment_shift, "ema": config.ema,
        })


if __name__ == "__main__":
    run_stage(main)
