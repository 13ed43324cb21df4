"""Batch sources for :func:`deeplog_spark.nn.trainer.fit` (no Spark import).

``ArraySource`` serves NumPy arrays (the Spark-free path and tests); ``PetastormSource`` serves a
Petastorm converter's Parquet cache through ``make_torch_dataloader``, sharded by rank;
``CountSampledSource`` draws distinct (window, target) rows in proportion to their counts.
All give every rank the same number of training steps per epoch, which DDP needs.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch

from deeplog_spark.nn.trainer import Batch


class ArraySource:
    """Shuffled mini-batches of in-memory arrays, sharded across ``world`` ranks."""

    def __init__(self, window: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                 batch_size: int = 128, seed: int = 1337, rank: int = 0, world: int = 1):
        if len(window) != len(target):
            raise ValueError(f"window ({len(window)}) and target ({len(target)}) lengths differ")
        self.window = torch.as_tensor(np.asarray(window))
        self.target = torch.as_tensor(np.asarray(target))
        w = np.ones(len(target), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
        self.weight = torch.as_tensor(w)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world

    def __len__(self) -> int:
        return len(self.target)

    def _batches(self, idx: torch.Tensor) -> Iterator[Batch]:
        for s in range(0, len(idx), self.batch_size):
            i = idx[s:s + self.batch_size]
            yield {"window": self.window[i], "target": self.target[i], "weight": self.weight[i]}

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(len(self), generator=g)
        per_rank = len(self) // self.world  # equal shards: DDP ranks must take the same steps
        if per_rank == 0:
            raise ValueError(f"{len(self)} training rows cannot be shared by {self.world} ranks")
        return self._batches(perm[self.rank * per_rank:(self.rank + 1) * per_rank])

    def full(self) -> Iterator[Batch]:
        return self._batches(torch.arange(self.rank, len(self), self.world))

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`PetastormSource`)."""


class PetastormSource:
    """Batches from a Petastorm Spark converter, this rank's shard of the row groups.

    Training reads an endless loader and cuts it into ``steps_per_epoch`` steps (the same on
    every rank); ``full()`` reads this rank's shard once, for validation and statistics.
    """

    def __init__(self, converter: Any, batch_size: int, rank: int = 0, world: int = 1,
                 seed: int = 1337, workers: int = 2):
        self.converter, self.batch_size, self.rank, self.world = converter, batch_size, rank, world
        self.seed, self.workers = seed, workers
        self.steps_per_epoch = max(1, math.ceil(len(converter) / (batch_size * world)))
        self._ctx = None
        self._it: Iterator | None = None

    def _loader(self, num_epochs: int | None, shuffle: bool):
        return self.converter.make_torch_dataloader(
            batch_size=self.batch_size,
            num_epochs=num_epochs,
            cur_shard=self.rank if self.world > 1 else None,
            shard_count=self.world if self.world > 1 else None,
            shuffling_queue_capacity=4 * self.batch_size if shuffle else 0,
            workers_count=self.workers,
            seed=self.seed,
            shuffle_row_groups=shuffle,
        )

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if self._it is None:
            self._ctx = self._loader(num_epochs=None, shuffle=True)
            self._it = iter(self._ctx.__enter__())
        for _ in range(self.steps_per_epoch):
            yield next(self._it)

    def full(self) -> Iterator[Batch]:
        with self._loader(num_epochs=1, shuffle=False) as loader:
            yield from loader

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx, self._it = None, None


class CountSampledSource(ArraySource):
    """Distinct rows drawn in proportion to their ``weight`` (count): SGD over all windows.

    Training on distinct rows once per epoch with count-weighted losses has the right expected
    gradient, but makes one step per ``batch_size`` distinct rows: a few dozen steps per epoch on
    HDFS, and noisy ones (a few rows carry most of the weight). Here every epoch draws
    ``epoch_rows`` rows (at most the window count; 0 = the window count) with replacement, each
    row with probability count / total, and trains them with weight 1, so a step sees what a step
    over all windows sees, from a table ~60x smaller on HDFS. (``torch.multinomial`` takes at most
    2^24 rows: ``max_train_rows`` keeps a distinct table far below that.)
    Each rank draws its own ``epoch_rows / world`` rows from all rows (the table is small), seeded
    by (seed, rank, epoch). ``full()`` stays one weighted pass over the rows (exact metrics).
    """

    def __init__(self, window: np.ndarray, target: np.ndarray, weight: np.ndarray, epoch_rows: int = 0,
                 batch_size: int = 128, seed: int = 1337, rank: int = 0, world: int = 1):
        super().__init__(window, target, weight, batch_size, seed, rank, world)
        if len(self) == 0 or float(self.weight.sum()) <= 0:
            raise ValueError("no training rows with a positive count to draw from")
        if epoch_rows < 0:
            raise ValueError(f"epoch_rows must be 0 (all windows) or positive, got {epoch_rows}")
        total = float(self.weight.sum())
        # 0: an epoch draws as many rows as there are windows, the cost of an epoch over all of them
        self.epoch_rows = int(min(epoch_rows, total)) if epoch_rows > 0 else int(round(total))
        self.steps_per_epoch = max(1, math.ceil(self.epoch_rows / (batch_size * world)))
        self._p = (self.weight / self.weight.sum()).double()

    @classmethod
    def from_batches(cls, batches, epoch_rows: int, **kw) -> "CountSampledSource":
        """Collect ``window, target, weight`` batches (one pass over a source) into a sampler."""
        parts: dict[str, list] = {"window": [], "target": [], "weight": []}
        for b in batches:
            for k in parts:
                parts[k].append(torch.as_tensor(b[k]))
        if not parts["target"]:
            raise ValueError("no training rows to draw from")
        return cls(*(torch.cat(parts[k]).numpy() for k in ("window", "target", "weight")), epoch_rows, **kw)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, epoch)) % (2**62))
        ones = torch.ones(self.batch_size, dtype=torch.float32)
        for _ in range(self.steps_per_epoch):
            i = torch.multinomial(self._p, self.batch_size, replacement=True, generator=g)
            yield {"window": self.window[i], "target": self.target[i], "weight": ones}
