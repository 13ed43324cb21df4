"""Batch sources for :func:`deeplog_spark.nn.trainer.fit` (no Spark import).

``ArraySource`` serves in-memory columns (the Spark-free path, the value model's chunks and tests);
``ParquetSource`` serves the training rows Spark wrote as Parquet (a :class:`ParquetFeed`, read
with ``pyarrow``), sharded by rank; ``PetastormSource`` serves a Petastorm converter's Parquet
cache through ``make_torch_dataloader``, sharded by rank (the optional Petastorm feed);
``CountSampledSource`` draws distinct windows by (a power of) their counts, each with the law of
its next event. All give every rank the same number of training steps per epoch, which DDP needs.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def collected(batches: Iterator[Batch]) -> dict[str, np.ndarray]:
    """The columns of ``batches`` (one pass over a source), their rows in a repeatable order: readers
    deliver row groups in any order, and the sources draw and shuffle by row index."""
    parts: dict[str, list] = {}
    for b in batches:
        for k, v in b.items():
            parts.setdefault(k, []).append(torch.as_tensor(v))
    if not parts:
        raise ValueError("no rows to read")
    cols = {k: torch.cat(v).numpy() for k, v in parts.items()}
    n = len(next(iter(cols.values())))
    keys = np.column_stack([cols[k].reshape(n, -1).astype(np.float64) for k in sorted(cols)])
    order = np.lexsort(keys.T[::-1])
    return {k: v[order] for k, v in cols.items()}


def key_columns(window: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The key model's columns; ``weight`` (how many windows a row stands for) defaults to 1."""
    w = np.ones(len(target), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
    return {"window": np.asarray(window), "target": np.asarray(target), "weight": w}


class ParquetFeed:
    """Training rows that Spark wrote as Parquet files into ``path`` (a local or mounted folder, such
    as a ``/Volumes`` path), read by each rank with ``pyarrow``: the maintained feed, in place of a
    Petastorm converter (the same ``len`` and ``delete``)."""

    def __init__(self, path: str, rows: int):
        self.path, self.rows = path, rows

    def __len__(self) -> int:
        return self.rows

    def files(self) -> list[str]:
        """The Parquet files, in a fixed order (every rank sees the same list)."""
        return sorted(str(p) for p in Path(self.path).glob("*.parquet"))

    def read(self, files: Sequence[str]) -> dict[str, np.ndarray]:
        """The columns of ``files``, one array each (a fixed-length list column as a 2-D array)."""
        import pyarrow.parquet as pq  # pyarrow comes with pandas and Spark; loaded when a feed is read

        parts: dict[str, list[np.ndarray]] = {}
        for f in files:
            table = pq.read_table(f)
            for name in table.column_names:
                parts.setdefault(name, []).append(_numpy(table.column(name).combine_chunks(), table.num_rows))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def delete(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _numpy(col, rows: int) -> np.ndarray:
    """A pyarrow column as numpy: a list column (every list of one length) as rows x length."""
    import pyarrow as pa  # loaded with the feed

    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
    return col.to_numpy(zero_copy_only=False)


class ParquetSource:
    """Batches from a :class:`ParquetFeed`: this rank's files (every ``world``-th), read a file at a
    time and shuffled within it, in a seeded order of files each epoch.

    Training cuts an endless stream into ``steps_per_epoch`` steps (the same on every rank, as DDP
    needs); ``full()`` reads this rank's files once, in order. Tables small enough for memory are
    read whole with ``full()`` and served by :class:`ArraySource` instead (``train/runner.py``), so
    Petastorm and this feed give the same batches there.
    """

    def __init__(self, feed: ParquetFeed, batch_size: int, rank: int = 0, world: int = 1, seed: int = 1337):
        self.feed, self.batch_size, self.rank, self.world, self.seed = feed, batch_size, rank, world, seed
        self.shard = feed.files()[rank::world]
        if not self.shard:
            raise ValueError(f"{feed.path}: no Parquet file for rank {rank} of {world}")
        self.steps_per_epoch = max(1, math.ceil(len(feed) / (batch_size * world)))
        self._it: Iterator[Batch] | None = None

    def _stream(self) -> Iterator[Batch]:
        rest: dict[str, np.ndarray] | None = None
        for round_ in itertools.count():
            order = np.random.default_rng((self.seed, self.rank, round_)).permutation(len(self.shard))
            served = 0
            for i in order:
                cols = self.feed.read([self.shard[i]])
                rows = len(next(iter(cols.values())))
                served += rows
                perm = np.random.default_rng((self.seed, self.rank, round_, int(i))).permutation(rows)
                cols = {k: v[perm] for k, v in cols.items()}
                if rest is not None:
                    cols = {k: np.concatenate([rest[k], v]) for k, v in cols.items()}
                n = len(next(iter(cols.values())))
                whole = n - n % self.batch_size
                for s in range(0, whole, self.batch_size):
                    yield {k: torch.as_tensor(v[s:s + self.batch_size]) for k, v in cols.items()}
                rest = {k: v[whole:] for k, v in cols.items()}
            if not served:
                raise ValueError(f"{self.feed.path}: the files of rank {self.rank} of {self.world} hold no rows")

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if self._it is None:
            self._it = self._stream()
        for _ in range(self.steps_per_epoch):
            yield next(self._it)

    def full(self) -> Iterator[Batch]:
        for f in self.shard:
            cols = self.feed.read([f])
            n = len(next(iter(cols.values())))
            for s in range(0, n, self.batch_size):
                yield {k: torch.as_tensor(v[s:s + self.batch_size]) for k, v in cols.items()}

    def close(self) -> None:
        self._it = None


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
    """Distinct windows drawn in proportion to ``count ** power``, each with its next-event law.

    The rows are distinct (window, target) pairs with their ``weight`` (count). They are grouped by
    window: each distinct window gets its count (the sum over its targets) and the distribution of
    its next events (a soft target, exact). Each step draws ``batch_size`` windows with replacement,
    window w with probability ``count_w ** power / sum``; a window drawn several times is evaluated
    once with its multiplicity as weight, and its loss is the cross-entropy against its soft target.

    - ``power = 1``: the law of a mini-batch over all windows (the same expected gradient as
      training on every window), with less variance than drawing (window, target) pairs.
    - ``power < 1`` (0.5 by default, docs/training.md): rare windows are drawn more often than
      their share. A model that fits every window's law minimises this and the all-windows loss
      alike (each window's target law is exact; only the trade-off between windows moves), and
      with a fixed budget of steps it fits the rare windows better, so it reaches a lower
      validation loss over all windows, count-weighted (``bench/results/train_speed_57k.md``).

    An epoch is ``steps_per_epoch`` steps (0: as many draws as windows). Each rank draws its own
    windows from all rows (the table is small), seeded by (seed, rank, epoch). ``full()`` stays one
    count-weighted pass over the (window, target) rows (exact metrics). ``torch.multinomial`` takes
    at most 2^24 windows.
    """

    def __init__(self, columns: Mapping[str, np.ndarray], steps_per_epoch: int = 0, batch_size: int = 128,
                 seed: int = 1337, rank: int = 0, world: int = 1, power: float = 1.0):
        super().__init__(columns, batch_size, seed, rank, world)
        weight = self.columns["weight"].double()
        if self.rows == 0 or float(weight.sum()) <= 0:
            raise ValueError("no training rows with a positive count to draw from")
        if steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be 0 (one pass over the windows) or positive, got {steps_per_epoch}")
        if not 0.0 < power <= 1.0:
            raise ValueError(f"power must be in (0, 1], got {power}")
        total = float(weight.sum())
        self.steps_per_epoch = steps_per_epoch or max(1, math.ceil(total / (batch_size * world)))
        window = self.columns["window"].numpy().reshape(self.rows, -1)
        target = self.columns["target"].numpy().astype(np.int64)
        if target.min() < 0:
            raise ValueError("targets must be class ids >= 0")
        uniq, inverse = np.unique(window, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        soft = np.zeros((len(uniq), int(target.max()) + 1), dtype=np.float64)
        np.add.at(soft, (inverse, target), weight.numpy())
        counts = soft.sum(axis=1)
        self.windows = torch.as_tensor(uniq)
        self.counts = torch.as_tensor(counts)  # windows each distinct window stands for
        law = np.divide(soft, counts[:, None], out=np.zeros_like(soft), where=counts[:, None] > 0)
        self.soft = torch.as_tensor(law.astype(np.float32))  # a window of count 0 is never drawn
        p = torch.as_tensor(counts) ** power
        self._p = p / p.sum()

    def epoch(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, epoch)) % (2**62))
        for _ in range(self.steps_per_epoch):
            drawn = torch.multinomial(self._p, self.batch_size, replacement=True, generator=g)
            rows, times = torch.unique(drawn, return_counts=True)
            yield {"window": self.windows[rows], "soft": self.soft[rows], "weight": times.float()}
