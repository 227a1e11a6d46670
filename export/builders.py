"""What `genserve train <family>` and `genserve export <family>` run: one builder per family.

A builder trains (resuming its checkpoint), and unless `train_only`, evaluates, exports and
publishes the next version. A new family adds one function and one line to BUILDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BuildOptions:
    repo_root: Path
    name: str  # model name in the repository
    checkpoint_dir: Path  # resumable training state for this model
    epochs: int | None = None  # None: the family's default
    seed: int = 0
    data_path: Path | None = None  # the user's own data set, where the family takes one
    limit: int | None = None  # use only this many training examples (quick runs, tests)
    conditional: bool = False  # class-conditional variant, where the family has one
    progress: bool = True
    train_only: bool = False


def build_vae(options: BuildOptions) -> Path:
    from genserve.export.models.vae import VAEConfig
    from genserve.export.pipeline import DEFAULT_EPOCHS, build_vae as pipeline_build_vae, train_vae_only

    config = VAEConfig(num_classes=10 if options.conditional else 0)
    epochs = options.epochs or DEFAULT_EPOCHS
    if options.train_only:
        return train_vae_only(config, epochs=epochs, seed=options.seed, data_path=options.data_path,
                              limit=options.limit, checkpoint_dir=options.checkpoint_dir, progress=options.progress)
    return pipeline_build_vae(options.repo_root, name=options.name, config=config, epochs=epochs, seed=options.seed,
                              data_path=options.data_path, limit=options.limit,
                              checkpoint_dir=options.checkpoint_dir, progress=options.progress)


BUILDERS: dict[str, Callable[[BuildOptions], Path]] = {
    "vae": build_vae,
}

# Default repository name of each family's conditional variant.
CONDITIONAL_NAMES = {"vae": "cvae"}
