"""Batch sources for :func:`deeplog_spark.nn.trainer.fit` (no Spark import).

``ArraySource`` serves in-memory columns (the Spark-free path, the value model's chunks and tests);
``PetastormSource`` serves a Petastorm converter's Parquet cache through ``make_torch_dataloader``,
sharded by rank; ``CountSampledSource`` draws distinct (window, target) rows in proportion to
their counts. All give every rank the same number of training steps per epoch, which DDP needs.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from deeplog_spark.nn.trainer import Batch


class ArraySource:
    """Shuffled mini-batches of in-memory columns (equal lengths), sharded across ``world`` ranks.

    Example::

        ArraySource({"window": x, "target": y, "weight": w}, batch_size=128)
    """

    def __init__(self, columns: Mapping[str, np.ndarray], batch_size: int = 128, seed: int = 1337,
                 rank: int = 0, world: int = 1):
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns have different lengths: {lengths}")
        self.columns = {k: torch.as_tensor(np.asarray(v)) for k, v in columns.items()}
        self.rows = next(iter(lengths.values()))
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        if self.rows // world == 0:
            raise ValueError(f"{self.rows} rows cannot be shared by {world} ranks")
        self.steps_per_epoch = math.ceil((self.rows // world) / batch_size)

    def __len__(self) -> int:
        return self.rows

    def _batches(self, idx: torch.Tensor) -> Iterator[Batch]:
        for s in range(0, len(idx), self.batch_size):
            i = idx[s:s + self.batch_size]
            yield {k: v[i] for k, v in self.columns.items()}

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.rows, generator=g)
        per_rank = self.rows // self.world  # equal shards: DDP ranks must take the same steps
        return self._batches(perm[self.rank * per_rank:(self.rank + 1) * per_rank])

    def full(self) -> Iterator[Batch]:
        return self._batches(torch.arange(self.rank, self.rows, self.world))

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`PetastormSource`)."""


def key_columns(window: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The key model's columns; ``weight`` (how many windows a row stands for) defaults to 1."""
    w = np.ones(len(target), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
    return {"window": np.asarray(window), "target": np.asarray(target), "weight": w}


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
    """Distinct (window, target) rows drawn in proportion to their ``weight`` (count): SGD over all windows.

    Each step draws ``batch_size`` rows with replacement, each with probability count / total,
    which is the law of a mini-batch over all windows, from a table ~60x smaller on HDFS. Rows drawn
    several times in one step are evaluated once with their multiplicity as weight (the same
    gradient; the frequent rows of HDFS make a draw of 2048 about 600 distinct rows). An epoch is
    ``steps_per_epoch`` steps (0: as many draws as windows). Each rank draws its own rows from all
    rows (the table is small), seeded by (seed, rank, epoch). ``full()`` stays one count-weighted
    pass over the rows (exact metrics). ``torch.multinomial`` takes at most 2^24 rows.
    """

    def __init__(self, columns: Mapping[str, np.ndarray], steps_per_epoch: int = 0, batch_size: int = 128,
                 seed: int = 1337, rank: int = 0, world: int = 1):
        super().__init__(columns, batch_size, seed, rank, world)
        weight = self.columns["weight"].double()
        if self.rows == 0 or float(weight.sum()) <= 0:
            raise ValueError("no training rows with a positive count to draw from")
        if steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be 0 (one pass over the windows) or positive, got {steps_per_epoch}")
        total = float(weight.sum())
        self.steps_per_epoch = steps_per_epoch or max(1, math.ceil(total / (batch_size * world)))
        self._p = weight / weight.sum()

    @classmethod
    def from_batches(cls, batches, steps_per_epoch: int, **kw) -> "CountSampledSource":
        """Collect ``window, target, weight`` batches (one pass over a source) into a sampler."""
        parts: dict[str, list] = {"window": [], "target": [], "weight": []}
        for b in batches:
            for k in parts:
                parts[k].append(torch.as_tensor(b[k]))
        if not parts["target"]:
            raise ValueError("no training rows to draw from")
        cols = {k: torch.cat(v).numpy() for k, v in parts.items()}
        # readers deliver row groups in any order: sort the rows so the draws are repeatable
        keys = np.column_stack([cols["window"].reshape(len(cols["target"]), -1), cols["target"]])
        order = np.lexsort(keys.T[::-1])
        return cls({k: v[order] for k, v in cols.items()}, steps_per_epoch, **kw)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, epoch)) % (2**62))
        for _ in range(self.steps_per_epoch):
            drawn = torch.multinomial(self._p, self.batch_size, replacement=True, generator=g)
            rows, times = torch.unique(drawn, return_counts=True)
            yield {"window": self.columns["window"][rows], "target": self.columns["target"][rows],
                   "weight": times.float()}
