"""What `genserve train <family>` and `genserve export <family>` run: one builder per family.

A builder trains (resuming its checkpoint), and unless `train_only`, evaluates, exports and
publishes the next version. A new family adds one function and one line to BUILDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genserve.export.core.options import RunOptions


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

    @property
    def run(self) -> RunOptions:
        return RunOptions(seed=self.seed, data_path=self.data_path, limit=self.limit, checkpoint_dir=self.checkpoint_dir,
                          progress=self.progress, train_only=self.train_only)


def build_vae(options: BuildOptions) -> Path:
    from genserve.export.families.vae.model import VAEConfig
    from genserve.export.families.vae.build import DEFAULT_EPOCHS, build_vae as pipeline_build_vae, train_vae_only

    config = VAEConfig(num_classes=10 if options.conditional else 0)
    epochs = options.epochs or DEFAULT_EPOCHS
    if options.train_only:
        return train_vae_only(config, epochs=epochs, seed=options.seed, data_path=options.data_path,
                              limit=options.limit, checkpoint_dir=options.checkpoint_dir, progress=options.progress)
    return pipeline_build_vae(options.repo_root, name=options.name, config=config, epochs=epochs, seed=options.seed,
                              data_path=options.data_path, limit=options.limit,
                              checkpoint_dir=options.checkpoint_dir, progress=options.progress)


def build_gpt(options: BuildOptions) -> Path:
    """The GPT on the pydoc prose (or --data text files); --epochs counts passes over the tokens."""
    from genserve.export.families.gpt.build import build_gpt as pipeline_build_gpt

    return pipeline_build_gpt(options.repo_root, name=options.name, epochs=options.epochs, run=options.run)


def build_textclf(options: BuildOptions) -> Path:
    """MiniLM-L6 fine-tuned on standard-library docstrings (or --data CSV/JSONL of text,label)."""
    from dataclasses import replace

    from genserve.export.families.textclf.build import DEFAULT_SETTINGS, build_textclf as pipeline_build, finetune_only

    settings = replace(DEFAULT_SETTINGS, epochs=options.epochs or DEFAULT_SETTINGS.epochs, seed=options.seed)
    if options.train_only:
        return finetune_only(None, settings, data_path=options.data_path, limit=options.limit,
                             checkpoint_dir=options.checkpoint_dir, progress=options.progress)
    return pipeline_build(options.repo_root, name=options.name, settings=settings, data_path=options.data_path,
                          limit=options.limit, checkpoint_dir=options.checkpoint_dir, progress=options.progress)


def image_options(options: BuildOptions) -> dict[str, object]:
    """What every image pipeline takes from BuildOptions, as keyword arguments; epochs only when given."""
    given = {"epochs": options.epochs} if options.epochs else {}
    return {"name": options.name, "run": options.run, **given}


def build_dae(options: BuildOptions) -> Path:
    """The convolutional denoising autoencoder on noisy/clean digit pairs (--data: MNIST IDX)."""
    from genserve.export.families.dae.build import build_dae as pipeline_build

    return pipeline_build(options.repo_root, **image_options(options))


def build_digits(options: BuildOptions) -> Path:
    """The small CNN digit classifier; also the judge of the digit generators' metrics."""
    from genserve.export.families.digits.build import build_digits as pipeline_build

    return pipeline_build(options.repo_root, **image_options(options))


def build_gan(options: BuildOptions) -> Path:
    """The digit DCGAN, class-conditional with --conditional; judged by the `digits` model."""
    from genserve.export.families.dcgan.build import CONDITIONAL_DIGIT_GAN, DIGIT_GAN, build_gan as pipeline_build

    config = CONDITIONAL_DIGIT_GAN if options.conditional else DIGIT_GAN
    return pipeline_build(options.repo_root, config=config, **image_options(options))


def build_faces(options: BuildOptions) -> Path:
    """The face DCGAN on LFW's 25x25 faces (--data: a folder of face images, made grey 25x25)."""
    from genserve.export.families.dcgan.build import build_faces as pipeline_build

    return pipeline_build(options.repo_root, **image_options(options))


BUILDERS: dict[str, Callable[[BuildOptions], Path]] = {
    "vae": build_vae,
    "dae": build_dae,
    "digits": build_digits,
    "gan": build_gan,
    "faces": build_faces,
    "textclf": build_textclf,
    "gpt": build_gpt,
}

# Default repository name of each family's conditional variant.
CONDITIONAL_NAMES = {"vae": "cvae"}
