"""What every family's build takes besides its own hyper-parameters."""

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
