"""Time to accuracy: the pipeline's default `lenet` against the LeNet notebook's recipe on Fashion-MNIST, same run.

The LeNet notebook's recipe, as it runs it (torchvision is not used: it does not import against CPU
torch, so its per-sample steps are written out exactly as torchvision performs them): a `Dataset` that
turns each uint8 image into a PIL image, then `ToTensor()` (float / 255) and `Normalize(mean, std)`
per sample; a 90/10 `random_split` (torch seed 1234); `DataLoader(batch_size=64, shuffle=True)`;
LeNet (the same architecture as ours, built by the same code); Adam lr 1e-3; 10 epochs, each a
training pass, a validation pass and `torch.save` of the weights when validation loss improved. Its
score is the notebook's: test accuracy of the best-validation-loss weights.

The pipeline side is `pipeline.training.Training` exactly as the train stage's `train` runs it, with the
`models.lenet` section of params.yaml (its own settings: the `per_dataset` recipe for Fashion-MNIST aims at the final
accuracy in 3 minutes, docs/recipes.md, not at this race), the pipeline's own split (54,000 train / 6,000 validation,
stratified) and its validation pass, dvclive log and resume checkpoint (every `checkpoint_every_s`).
After each epoch the current weights are scored on the test set, off the clock; the pipeline's time to
accuracy is its training time when that score first reaches the recipe's. Goal: <= 1/3 of the recipe's
training time (issue 6); issue 14: <= 1/5.

    MNIST_PIPELINE_MIRROR=../shared/datasets python -m bench.time_to_accuracy

Fashion-MNIST comes through the pipeline's own download (the mirror named by MNIST_PIPELINE_MIRROR,
Debian's /usr/share/datasets/fashion-mnist, then the official URLs). Takes about 10 minutes on 2 cores.
Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, random_split

from bench.common import project_params, save_results, seeded_model, stage_training, versions
from pipeline.data.formats.readers import READERS
from pipeline.data.registry import get_dataset
from pipeline.data.sources import download
from pipeline.data.split import make_split
from pipeline.device import for_device, seed_everything
from pipeline.inference import Normalization, predict
from pipeline.models import create_model
from pipeline.runtime import UserError

NOTEBOOK_SEED = 1234  # the LeNet notebook's SEED, for its random_split and weight init


class NotebookFashionMNIST(Dataset):
    """torchvision's FashionMNIST with transforms.Compose([ToTensor(), Normalize([mean], [std])])."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        x = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(1, *image.size[::-1])
        x = x.to(torch.float32).div(255)  # ToTensor
        return x.sub_(self.mean).div_(self.std), int(self.labels[index])  # Normalize


def load_fashion_mnist(tmp: Path) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]]:
    spec = get_dataset("fashion-mnist")
    download(spec, tmp / "raw")
    images, labels, official, *_ = READERS[spec.format](spec, tmp / "raw")
    return images, labels, official


def notebook_recipe(images: np.ndarray, labels: np.ndarray, official: dict, tmp: Path, epochs: int):
    """The LeNet notebook's training; returns (seconds, test accuracy of the best-validation weights, per-epoch rows)."""
    seed_everything(NOTEBOOK_SEED)
    train_rows, test_rows = np.arange(*official["train"]), np.arange(*official["test"])
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    mean = x_all[train_rows].float().mean().item() / 255
    std = x_all[train_rows].float().std().item() / 255
    full = NotebookFashionMNIST(x_all[train_rows], y_all[train_rows], mean, std)
    n_train = int(len(full) * 0.9)
    train_data, valid_data = random_split(full, [n_train, len(full) - n_train])
    test_data = NotebookFashionMNIST(x_all[test_rows], y_all[test_rows], mean, std)
    loaders = {name: DataLoader(data, batch_size=64, shuffle=name == "train")
               for name, data in (("train", train_data), ("valid", valid_data), ("test", test_data))}
    model = create_model("lenet", (1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def evaluate(loader: DataLoader) -> tuple[float, float]:
        model.eval()
        loss = acc = 0.0
        with torch.no_grad():
            for x, y in loader:
                y_pred = model(x)
                loss += F.cross_entropy(y_pred, y).item()
                acc += (y_pred.argmax(1) == y).float().mean().item()
        return loss / len(loader), acc / len(loader)  # batch means, as the notebook averages them

    rows, best_loss, clock, best_path = [], float("inf"), 0.0, tmp / "notebook-best.pt"
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        train_loss = train_acc = 0.0  # the notebook's running sums, one .item() per batch
        for x, y in loaders["train"]:
            optimizer.zero_grad()
            y_pred = model(x)
            loss = F.cross_entropy(y_pred, y)
            acc = (y_pred.argmax(1) == y).float().mean()
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            train_acc += acc.item()
        valid_loss, valid_acc = evaluate(loaders["valid"])
        if valid_loss < best_loss:
            best_loss = valid_loss
            torch.save(model.state_dict(), best_path)
        clock += time.perf_counter() - start
        rows.append((epoch, clock, valid_acc, evaluate(loaders["test"])[1]))  # test score off the clock
    model.load_state_dict(torch.load(best_path, weights_only=True))
    return clock, evaluate(loaders["test"])[1], rows


def pipeline_lenet(images: np.ndarray, labels: np.ndarray, official: dict, tmp: Path, target: float):
    """The train stage's lenet until its test accuracy reaches `target`: (seconds or None, per-epoch rows)."""
    params = project_params()
    split = make_split(labels, official, params.split.val_fraction, params.split.test_fraction, params.split.seed)
    norm = Normalization.fit(images[split["train"]])
    x_test, y_test = torch.from_numpy(images[split["test"]]), torch.from_numpy(labels[split["test"]])
    config = params.models["lenet"]
    model = seeded_model("lenet", config, (1, 28, 28), 10, params.seed)
    rows: list[tuple[int, float, float]] = []
    scoring = 0.0  # seconds spent scoring so far: taken off the training clock
    start = time.perf_counter()

    config = for_device(config, torch.device("cpu")).for_dataset(get_dataset("fashion-mnist").keeps_label)
    run = stage_training(model, images, labels, split, config, norm,
                         torch.device("cpu"), params.seed, tmp, params.checkpoint_every_s)
    for epoch in run.epochs(tmp / "live", "lenet"):  # run.state.evaluated holds each epoch's weights in turn
        scored = time.perf_counter()
        accuracy = (predict(run.state.evaluated, x_test, norm, 1000).argmax(1) == y_test).float().mean().item()
        rows.append((epoch, scored - start - scoring, accuracy))
        scoring += time.perf_counter() - scored
        if accuracy >= target:
            return rows[-1][1], rows
    return None, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-epochs", type=int, default=10, help="epochs of the LeNet notebook's recipe (10)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the pipeline's CPU stages run
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        try:
            images, labels, official = load_fashion_mnist(tmp)
        except UserError as err:
            sys.exit(f"error: {err}")
        print(f"{versions()}; Fashion-MNIST "
              f"{official['train'][1]} train + {official['test'][1] - official['test'][0]} test images")
        recipe_time, target, recipe_rows = notebook_recipe(images, labels, official, tmp, args.seed_epochs)
        print(f"LeNet notebook recipe: {recipe_time:.1f} s for {args.seed_epochs} epochs; test accuracy of its "
              f"best-validation weights {target:.4f}")
        for epoch, clock, valid_acc, test_acc in recipe_rows:
            print(f"  epoch {epoch:2d}  {clock:7.1f} s  val acc {valid_acc:.4f}  test acc {test_acc:.4f}")
        ours, rows = pipeline_lenet(images, labels, official, tmp, target)
        print("pipeline lenet (params.yaml defaults):")
        for epoch, clock, test_acc in rows:
            print(f"  epoch {epoch:2d}  {clock:7.1f} s  test acc {test_acc:.4f}")
        if ours is None:
            print(f"the pipeline's lenet did not reach {target:.4f} within {len(rows)} epochs")
        else:
            print(f"time to {target:.4f}: pipeline {ours:.1f} s, notebook recipe {recipe_time:.1f} s -> "
                  f"{ours / recipe_time:.3f} of the recipe's time (goal <= 0.2)")
    save_results("time_to_accuracy", {
        "notebook recipe": {"epochs": args.seed_epochs, "train seconds": round(recipe_time, 1),
                            "test accuracy (best-validation weights)": round(target, 4),
                            "test accuracy per epoch": [round(row[3], 4) for row in recipe_rows]},
        "pipeline lenet": {"epochs run (it stops at the recipe's accuracy)": len(rows),
                           "test accuracy per epoch": [round(row[2], 4) for row in rows],
                           "seconds to the recipe's accuracy": None if ours is None else round(ours, 1),
                           "train seconds": round(rows[-1][1], 1)},
        "time ratio, pipeline / recipe (goal <= 0.2)": None if ours is None else round(ours / recipe_time, 3)})


if __name__ == "__main__":
    main()
