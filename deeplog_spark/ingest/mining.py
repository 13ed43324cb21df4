"""Template mining for logs without known templates, with Drain3 (no Spark import).

Drain (He et al., ICWS 2017) groups log messages by a fixed-depth parse tree over their tokens;
Drain3 is its maintained streaming implementation (logpai / IBM). Here:

- :class:`Miner` wraps one Drain3 ``TemplateMiner`` with generic masks (IPs, hex, numbers) and
  Loghub-style ``<*>`` parameters; :meth:`Miner.state` / :meth:`Miner.from_state` save and restore
  it, so new data is matched to the same template ids (a run keeps the state with its models).
- :meth:`Miner.match` maps a message to its template id without learning; a message no template
  matches gets :data:`UNKNOWN_TEMPLATE` and the reason :data:`REASON_UNKNOWN_TEMPLATE`.
- :func:`merge` folds the templates mined on several partitions into one miner: each partition's
  templates are fed to a fresh miner in order of their counts, so partitions can be mined in
  parallel and only their (small) templates reach the driver, never the log.
- :func:`grouping_accuracy` and :func:`template_accuracy` score a miner against Loghub's ground
  truth (``*_structured.csv``), as the Loghub benchmark defines them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

#: Template id of a message no mined template matches (scoring time); ids of templates start at 1.
UNKNOWN_TEMPLATE = 0
REASON_UNKNOWN_TEMPLATE = "unknown_template"

#: Generic masks (Drain3's ``MaskingInstruction``): parameters that would otherwise split templates.
#: IPs (with a port), hex values and numbers, each only as a whole token: not preceded or followed
#: by a letter or digit. (Drain3's example masks write that as ``((?<=[^A-Za-z0-9])|^)`` and
#: ``((?=[^A-Za-z0-9])|$)``; the negative lookarounds here match exactly the same text and are
#: much cheaper in the JVM's regex engine, which has no alternation to backtrack through.)
MASKS = (
    (r"(?<![A-Za-z0-9])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d+)?(?![A-Za-z0-9])", "*"),
    (r"(?<![A-Za-z0-9])0x[a-fA-F0-9]+(?![A-Za-z0-9])", "*"),
    (r"(?<![A-Za-z0-9])[\-\+]?\d+(?:\.\d+)?(?![A-Za-z0-9])", "*"),
)
#: A literal every match of a mask contains (a substring test before the regex can skip it).
MASK_NEEDS = {MASKS[0][0]: ".", MASKS[1][0]: "0x"}


def _config(sim_th: float, depth: int):
    # Drain3 loads only when templates are mined
    from drain3.masking import MaskingInstruction

    # Drain3 loads only when templates are mined
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.drain_sim_th = sim_th
    cfg.drain_depth = depth
    cfg.mask_prefix, cfg.mask_suffix = "<", ">"
    cfg.masking_instructions = [MaskingInstruction(p, m) for p, m in MASKS]
    cfg.parametrize_numeric_tokens = True
    cfg.profiling_enabled = False
    return cfg


class Miner:
    """One Drain3 miner: ``add`` learns, ``match`` only looks up (for scoring)."""

    def __init__(self, sim_th: float = 0.4, depth: int = 4):
        # Drain3 loads only when templates are mined
        from drain3 import TemplateMiner

        self.sim_th, self.depth = sim_th, depth
        self.tm = TemplateMiner(config=_config(sim_th, depth))

    def add(self, message: str) -> int:
        """Learn ``message``; returns its template id (>= 1)."""
        return int(self.tm.add_log_message(message.strip())["cluster_id"])

    def match(self, message: str) -> int:
        """The template id of ``message``, or :data:`UNKNOWN_TEMPLATE` (never learns)."""
        cluster = self.tm.match(message.strip(), full_search_strategy="fallback")
        return int(cluster.cluster_id) if cluster is not None else UNKNOWN_TEMPLATE

    def templates(self) -> dict[int, str]:
        """template id -> template text, parameters as ``<*>`` (Loghub's notation)."""
        return {int(c.cluster_id): loghub_template(c.get_template()) for c in self.tm.drain.clusters}

    def counts(self) -> dict[int, int]:
        return {int(c.cluster_id): int(c.size) for c in self.tm.drain.clusters}

    def state(self) -> str:
        """The miner as JSON: settings and every template with its count, in id order."""
        clusters = sorted(self.tm.drain.clusters, key=lambda c: c.cluster_id)
        return json.dumps({"sim_th": self.sim_th, "depth": self.depth,
                           "templates": [[int(c.cluster_id), c.get_template(), int(c.size)] for c in clusters]})

    @classmethod
    def from_state(cls, state: str) -> "Miner":
        """A miner that matches what the saved one matched, with the same template ids."""
        doc = json.loads(state)
        miner = cls(doc["sim_th"], doc["depth"])
        for cid, template, size in doc["templates"]:
            got = miner.add(template)
            if got != cid:
                raise ValueError(f"template {cid} restored as {got}: the state is not in id order")
            miner.tm.drain.id_to_cluster[cid].size = size
        return miner


def loghub_template(template: str) -> str:
    """Drain3's masks (``<*>``, ``<NUM>``...) as Loghub's ``<*>``."""
    return re.sub(r"<[A-Z*]+>", "<*>", template)


def mine(messages: Iterable[str], sim_th: float = 0.4, depth: int = 4) -> tuple[Miner, list[int]]:
    """Mine ``messages`` in order; returns the miner and each message's final template id."""
    miner = Miner(sim_th, depth)
    for m in messages:
        miner.add(m)
    return miner, [miner.match(m) for m in messages]


def partition_templates(messages: Iterable[str], sim_th: float = 0.4, depth: int = 4,
                        counts: Iterable[int] | None = None) -> list[tuple[str, int]]:
    """(template, count) of one partition's messages: what a Spark task returns. With ``counts``,
    each message stands for that many lines (distinct messages: Drain learns nothing from a
    message it has seen, so feeding each once gives the same templates)."""
    miner = Miner(sim_th, depth)
    if counts is None:
        for m in messages:
            miner.add(m)
    else:
        for m, n in zip(messages, counts):
            cid = miner.add(m)
            miner.tm.drain.id_to_cluster[cid].size += int(n) - 1
    counts = miner.counts()
    return [(c.get_template(), counts[int(c.cluster_id)]) for c in miner.tm.drain.clusters]


def merge(parts: Sequence[Sequence[tuple[str, int]]], sim_th: float = 0.4, depth: int = 4) -> Miner:
    """One miner from the templates of several partitions (the most frequent first, so the ids are
    stable whatever the partitioning; ties by text)."""
    total: Counter = Counter()
    for part in parts:
        for template, count in part:
            total[template] += count
    miner = Miner(sim_th, depth)
    for template, count in sorted(total.items(), key=lambda tc: (-tc[1], tc[0])):
        cid = miner.add(template)
        miner.tm.drain.id_to_cluster[cid].size += count - 1
    return miner


def grouping_accuracy(truth: Sequence[str], predicted: Sequence[int]) -> float:
    """Loghub's parsing (grouping) accuracy: the share of messages whose predicted group holds
    exactly the messages of their ground-truth group (Zhu et al., ICSE-SEIP 2019)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    by_pred: Mapping[int, list[int]] = defaultdict(list)
    by_true: Mapping[str, list[int]] = defaultdict(list)
    for i, (t, p) in enumerate(zip(truth, predicted)):
        by_pred[p].append(i)
        by_true[t].append(i)
    correct = 0
    for members in by_pred.values():
        truths = {truth[i] for i in members}
        if len(truths) == 1 and len(by_true[next(iter(truths))]) == len(members):
            correct += len(members)
    return correct / len(truth) if truth else 1.0


def template_accuracy(truth_templates: Sequence[str], predicted_templates: Sequence[str]) -> float:
    """Loghub-2.0's template accuracy (PA): the share of messages whose template text, parameters as
    ``<*>`` and whitespace collapsed, equals the ground truth's."""
    def norm(t: str) -> str:
        return " ".join(t.split())

    ok = sum(norm(a) == norm(b) for a, b in zip(truth_templates, predicted_templates))
    return ok / len(truth_templates) if truth_templates else 1.0
