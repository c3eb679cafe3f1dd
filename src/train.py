"""Stage train: fit one model on one dataset (params: models.<model>, seed, device)."""

from pipeline.config import load_params
from pipeline.data.parsed import load_parsed
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

    params = load_params(args.params)
    if args.model not in params.models:
        raise UserError(f"--model {args.model!r} has no section under models:; sections: {', '.join(params.models)}")
    device = resolve_device(params.device)
    data = load_parsed(args.parsed)
    # The precision and augmentation that run (precision: auto, augment_flip: auto resolved for this device
    # and dataset), for the fingerprint, the training and the saved metadata.
    config = for_device(params.models[args.model], device).for_dataset(data.keeps_label, data.name)
    split = load_split(args.split)
    if config.batch_size > len(split["train"]):
        raise UserError(f"models.{args.model}.batch_size: {config.batch_size} is more than the "
                        f"{len(split['train'])} training images of {data.name}; lower it")
    norm = Normalization.fit(data.images[split["train"]])

    seed_everything(params.seed)  # before building: weight init is part of the run
    model = create_model(args.model, data.image_shape, len(data.classes), **config.arch)
    checkpoint = args.checkpoint and Checkpointing(args.checkpoint, fingerprint(
        args.model, config, params.seed, {"images": data.images, "labels": data.labels, **split},
        device_kind(device)), params.checkpoint_every_s)
    # The dvclive log is built beside its place and appears whole only once the weights are saved: a run
    # that fails (or diverges) leaves neither.
    with atomic_dir(args.live) as live_dir, out_of_memory_as_error(f"models.{args.model}.batch_size: {config.batch_size}"):
        train(model, data.images, data.labels, split, config, norm=norm, device=device, seed=params.seed,
              live_dir=live_dir, desc=f"{data.name}/{args.model}", checkpoint=checkpoint)
        save_model(args.out, model, meta={
            "model": args.model, "arch": dict(config.arch), "dataset": data.name, "classes": data.classes,
            "image_shape": list(data.image_shape), "normalization": norm.to_dict(),
            "precision": config.precision, "augment_flip": config.augment_flip,
            "augment_shift": config.augment_shift, "ema": config.ema,
        })
    if args.checkpoint:
        remove_checkpoint(args.checkpoint)


if __name__ == "__main__":
    run_stage(main)
