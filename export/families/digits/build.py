"""Build the digit classifier: digits -> train (with small random shifts) -> accuracy -> publish.

`build_digits` is what `genserve export digits` runs. Besides serving Classify, the published
classifier is the judge of the digit generators' metrics (metrics/judge.py), so its held-out
accuracy and the Inception score of real held-out digits are written on its card: they are
the ceiling the generators are compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genserve.export.core.layers import shift
from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.publishing import digit_training_record, publish_model
from genserve.export.core.training import FitResult, fit, init_module, run_settings
from genserve.export.data.mnist import digit_split
from genserve.export.families.digits.model import CNN_SPEC, CNNClassifier, CNNConfig
from genserve.export.metrics.images import inception_score
from genserve.export.metrics.judge import judge
from genserve.repository import ImageSpec

# Defaults: the full build (4,500 training digits) takes about 15 s on 2 idle CPU cores.
DEFAULT_EPOCHS = 14
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
MAX_SHIFT = 2  # pixels: random translations make the judge robust to off-centre generated digits


def train_classifier(
    config: CNNConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path | None,
    progress: bool = True,
) -> FitResult:
    """Adam on cross-entropy of randomly shifted training digits; resumable."""
    model = init_module(CNNClassifier, config, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    labels = torch.from_numpy(train_labels.astype(np.int64))

    def step(idx: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        loss = model.loss(shift(images[idx], g, MAX_SHIFT), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    settings = run_settings(config, [train_images, train_labels], batch_size=batch_size, lr=lr,
                            seed=seed, max_shift=MAX_SHIFT)
    return fit(model, {"adam": optimizer}, step, len(images), epochs=epochs, batch_size=batch_size,
               seed=seed, settings=settings, checkpoint_dir=checkpoint_dir, desc="train digits",
               progress=progress)


def heldout_metrics(
    model: CNNClassifier, images: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Accuracy, cross-entropy (nats) and the Inception score of the held-out digits."""
    _, probs = judge(model, images)
    picked = probs[np.arange(len(labels)), labels]
    return {
        "heldout_accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "heldout_nll_nats": float(-np.log(np.maximum(picked, 1e-12)).mean()),
        "inception_score_real": inception_score(probs),
    }


def build_digits(
    repo_root: Path,
    *,
    name: str = "digits",
    config: CNNConfig | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    run: RunOptions = RunOptions(),
) -> Path:
    """Train (resuming); unless train_only, measure, export and publish the next version of
    `name` and return its directory (train_only: the checkpoint directory)."""
    config = config or CNNConfig()
    x_train, y_train, x_held, y_held, dataset = digit_split(run.data_path, run.limit, run.seed)
    result = train_classifier(config, x_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr,
                              seed=run.seed, checkpoint_dir=run.checkpoint_dir, progress=run.progress)
    if run.train_only:
        return run.trained(repo_root)
    training = digit_training_record(
        dataset, x_train, x_held, run.seed, result, batch_size=batch_size, lr=lr, optimizer="Adam",
        augmentation=f"random shifts of up to {MAX_SHIFT} pixels",
    )
    return publish_model(
        repo_root, name, CNN_SPEC, result.model,
        image=ImageSpec(channels=config.channels, height=config.height, width=config.width),
        labels=[str(k) for k in range(config.num_classes)], training=training,
        metrics=heldout_metrics(result.model, x_held, y_held),
    )


def build(options: BuildOptions) -> Path:
    """The small CNN digit classifier; also the judge of the digit generators' metrics."""
    return build_digits(options.repo_root, **options.pipeline_kwargs())
