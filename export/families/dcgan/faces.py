"""Build the face DCGAN: LFW's faces (or a folder of the user's) -> train -> measure -> publish.

`build_faces` is what `genserve export faces` runs: the digit GAN's training (build.py), on the
training faces and their mirror images, judged on eigenfaces and HOG features
(metrics/images.py) rather than by the digit classifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.publishing import publish_model, training_record
from genserve.export.data.faces import describe_faces, load_faces, load_nonfaces, split_faces
from genserve.export.families.dcgan.build import (
    METRIC_SAMPLES,
    draw,
    optimizer,
    stabilisation,
    train_gan,
)
from genserve.export.families.dcgan.model import DCGAN_SPEC, GANConfig
from genserve.export.metrics.images import face_generation_metrics
from genserve.repository import ImageSpec

DEFAULT_FACE_EPOCHS = 300  # 160 images (80 faces and their mirror images): 5 steps an epoch
FACE_BATCH_SIZE = 32
FACE_HELDOUT_FRACTION = 0.2  # of LFW's 100 faces, 20 are never trained on
# LFW's 25x25 faces, no labels; a longer weight average (~1,000 of its 1,500 steps) smooths the
# mottled skin a 160-image GAN draws (eigenface FD 4.1 -> 3.2, real-vs-real 3.1).
FACE_GAN = GANConfig(height=25, width=25, average_decay=0.999)


def build_faces(
    repo_root: Path,
    *,
    name: str = "faces",
    config: GANConfig | None = None,
    epochs: int = DEFAULT_FACE_EPOCHS,
    batch_size: int = FACE_BATCH_SIZE,
    run: RunOptions = RunOptions(),
    metric_samples: int = METRIC_SAMPLES,
) -> Path:
    """The face DCGAN on LFW (or a folder of faces): train on the training faces and their
    mirror images (resuming); unless train_only, measure, export and publish."""
    config = config or FACE_GAN
    seed, data_path = run.seed, run.data_path
    faces = load_faces(data_path, size=(config.height, config.width), limit=run.limit)
    train_idx, held_idx = split_faces(len(faces), FACE_HELDOUT_FRACTION, seed)
    x_train, x_held = faces[train_idx], faces[held_idx]
    mirrored = np.concatenate([x_train, x_train[..., ::-1]])  # a mirrored face is still a face
    result = train_gan(config, mirrored, None, epochs=epochs, batch_size=batch_size, seed=seed,
                       checkpoint_dir=run.checkpoint_dir, progress=run.progress, desc=f"train {name}")
    if run.train_only:
        return run.trained(repo_root)
    samples = draw(result.model, metric_samples, seed)[0].numpy()
    lfw = data_path is None and (config.height, config.width) == (25, 25)
    nonfaces = load_nonfaces() if lfw else None  # LFW's non-faces only go with LFW's faces
    metrics = face_generation_metrics(samples, x_train, x_held, nonfaces)
    training = training_record(
        describe_faces(data_path), len(x_train), len(x_held),
        f"random {FACE_HELDOUT_FRACTION:.0%}, seed {seed}", result,
        augmentation="horizontal mirror images", batch_size=batch_size, lr=config.lr,
        optimizer=optimizer(config), seed=seed,
        stabilisation=stabilisation(config), metric_samples=metric_samples,
    )
    return publish_model(
        repo_root, name, DCGAN_SPEC, result.model,
        image=ImageSpec(channels=config.channels, height=config.height, width=config.width),
        latent_dim=config.latent_dim, training=training, metrics=metrics,
        grid=(draw(result.model, 64, seed + 1)[0], 8),
    )


def build(options: BuildOptions) -> Path:
    """The face DCGAN on LFW's 25x25 faces (--data: a folder of face images, made grey 25x25)."""
    return build_faces(options.repo_root, **options.pipeline_kwargs())
