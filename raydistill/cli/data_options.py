"""The data options of the CLI, written once: `DataSource` (`--data`, `--cache-dir`,
`--download`) and `DataOptions` (those and the train / val split: `--val-size`, `--split-seed`,
`--train-subset`).

A command takes them as one typed parameter (`dataset: DataOptions`); jsonargparse reads the
dataclass as a nested group (its fields, types and the help below) and `raydistill.cli.parser`
spells its fields as the command's own options (`--val-size`, not `--dataset.val_size`), in a
`--config FILE` too (`val-size: 5000`). The checks here import neither torch nor Ray; `load`
imports the data package when the work starts.
"""

# No `from __future__ import annotations` here: jsonargparse must see the fields' Annotated
# validators (Count, Count0) as objects to apply them; as strings it checked only `int`.

import os
from dataclasses import dataclass
from typing import Any

from raydistill.cli.args import Count, Count0, check_data
from raydistill.core.errors import UserError


@dataclass
class DataSource:
    """The dataset a command reads.

    Args:
        data: dataset: cifar10, a .parquet file, an ImageFolder root, a cifar-10-batches-py folder, synthetic-sep[:N] (train, teach: required; search: cifar10 by default; reproduce: the scale's by default; transfer, export: the dataset their input was made from by default; prune: to fine-tune on, without it prune only)
        cache_dir: decode cache root (default $RAYDISTILL_CACHE or ~/.cache/raydistill)
        download: download CIFAR-10 into the cache root if it is not there (--data cifar10)
    """

    data: str | None = None
    cache_dir: str | None = None
    download: bool = False

    def require(self, command: str) -> None:
        """Refuse a command that needs a dataset when none is given."""
        if self.data is None:
            raise UserError(
                f"{command} needs --data SOURCE, e.g. --data cifar10 or a .parquet file"
            )

    def check(self) -> None:
        """Refuse a source that cannot be loaded (numpy only, nothing decoded; no torch)."""
        check_data(self.data, self.cache_dir, self.download)

    def prepare(self) -> None:
        """`check`, then with --download fetch CIFAR-10 before the work starts."""
        self.check()
        if self.download and self.data == "cifar10":
            from raydistill.data.sources import fetch_cifar10

            fetch_cifar10(self.cache_dir)

    def export_cache_root(self) -> None:
        """Make --cache-dir the decode cache root of this process and the Ray workers it
        starts (they read $RAYDISTILL_CACHE): for work that loads a dataset a manifest names."""
        if self.cache_dir:
            from raydistill.data.cache import cache_root

            os.environ["RAYDISTILL_CACHE"] = str(cache_root(self.cache_dir))


@dataclass
class DataOptions(DataSource):
    """The dataset a command reads and its train / val split.

    Args:
        val_size: validation images taken from the training pool (default: min(10000, 20% of the pool); transfer: the teacher's; train, search with --transfer: the transfer set's)
        split_seed: seed of the train / val split (default 0; transfer: the teacher's; train, search with --transfer: the transfer set's)
        train_subset: class-balanced subset of the train split (CPU runs; transfer: the images to label, default the whole split; train, search with --transfer: the transfer set's)
    """

    val_size: Count0 | None = None
    split_seed: int | None = None
    train_subset: Count | None = None

    def follow_transfer_set(self, path: str | None) -> None:
        """Split options not given take the transfer set's own: it was labelled for one split
        and can be used with no other (a given option that differs is refused when it loads)."""
        if not path:
            return
        from raydistill.distill.transfer.format import read_meta

        made = read_meta(path).get("split") or {}
        if self.val_size is None:
            self.val_size = made.get("val_size")
        if self.split_seed is None:
            self.split_seed = made.get("seed")
        if self.train_subset is None:
            self.train_subset = made.get("train_subset")

    def split(self) -> dict[str, Any]:
        """The split as `raydistill.data.load_dataset` takes it (and manifests record it)."""
        seed = 0 if self.split_seed is None else self.split_seed
        return {"val_size": self.val_size, "seed": seed, "train_subset": self.train_subset}

    def load(self, **overrides: Any) -> Any:
        """The `Splits` of --data with this split (`overrides`: keys of `split`)."""
        from raydistill.data import load_dataset

        return load_dataset(self.data, cache_dir=self.cache_dir, **{**self.split(), **overrides})
