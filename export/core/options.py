"""What every family's build takes besides its own hyperparameters: RunOptions, BuildOptions.

`genserve train/export <family>` fills a BuildOptions; a family's `build(options)` turns it
into its pipeline's arguments (RunOptions for most).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0  # data split, initialisation, batches, samples
    data_path: Path | None = None  # the user's own data; None: what ships inside the packages
    limit: int | None = None  # use only this many examples (quick runs, tests)
    checkpoint_dir: Path | None = None  # resumable training state; None: none kept
    progress: bool = True  # progress bars
    train_only: bool = False  # train and checkpoint; measure and publish nothing

    def trained(self, repo_root: Path) -> Path:
        """What a train_only build returns: where its checkpoint is."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(repo_root)


@dataclass
class BuildOptions:
    """What `genserve train/export <family>` passes to the family's `build(options)`."""

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

    def pipeline_kwargs(self) -> dict[str, object]:
        """What the image pipelines take from these options, as keyword arguments; epochs only when given."""
        given = {"epochs": self.epochs} if self.epochs else {}
        return {"name": self.name, "run": self.run, **given}
