"""Public Loghub-family session sets -> the generic sequence input (no Spark import).

The product reads sessions that another tool already built as a CSV of ``session_id,events,label``
plus a templates file ``EventId,EventTemplate`` (ids ``E<n>``): ``--input sequences``. This
module writes those two files from the labelled sets that the Loghub community publishes:

- ``openstack``: ait-aecid's OpenStack instance sequences (``openstack_train``,
  ``openstack_test_normal``: normal; ``openstack_test_abnormal``: every instance of the abnormal
  log), one ``<instance uuid>,<id id ...>`` per line; template n is line n of
  ``OpenStack_templates.csv``;
- ``hadoop``: ait-aecid's Hadoop container sequences (``hadoop_train``, ``hadoop_test_normal``:
  normal; ``hadoop_test_abnormal.gz``: the applications with injected failures), same layout;
- ``thunderbird``: KRONE's 20,000 Thunderbird node sequences
  (``ThunderBird_demo_sequences.csv.gz``: ``seq_id,admin,Label,EventSequence,...`` with Python
  list literals) and its ``ThunderBird.log_templates.csv`` (ids in its ``EventId`` column).

Every label comes from the source as published; nothing is re-labelled. A session id that occurs
twice is written twice, and the ingest rejects both as ``duplicate_block_id``.

    python -m deeplog_spark.ingest.loghub openstack ../shared/data/loghub/OpenStack/ait_openstack_loghub generated/loghub/openstack
"""

from __future__ import annotations

import ast
import csv
import gzip
import sys
from pathlib import Path
from typing import Iterable, Iterator

SYSTEMS = ("openstack", "hadoop", "thunderbird")
SEQUENCES, LABELS, TEMPLATES = "sequences.csv", "labels.csv", "templates.csv"


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def ait_sessions(files: Iterable[tuple[Path, int]]) -> Iterator[tuple[str, list[str], int]]:
    """(session id, event ids, label) of ait's ``<id>,<e e e>`` files, labelled by file."""
    for path, label in files:
        with _open(path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    sid, _, events = line.partition(",")
                    yield sid, events.split(), label


def line_templates(path: Path) -> list[tuple[int, str]]:
    """ait's headerless template file: template n is line n."""
    with _open(path) as fh:
        return [(i, t.rstrip("\n")) for i, t in enumerate(fh, start=1) if t.strip()]


def krone_sessions(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """KRONE's sequences: ``seq_id`` (node ``admin``) with ``EventSequence`` as a list literal whose
    elements are ints or quoted ints (both occur); ``Label`` 1 = anomalous."""
    with _open(path) as fh:
        for row in csv.DictReader(fh):
            events = [str(int(str(e))) for e in ast.literal_eval(row["EventSequence"])]
            yield f"{row['admin']}/{row['seq_id']}", events, int(row["Label"])


def krone_templates(path: Path) -> list[tuple[int, str]]:
    with _open(path) as fh:
        return [(int(r["EventId"]), r["EventTemplate"]) for r in csv.DictReader(fh)]


def write(out: Path, sessions: Iterable[tuple[str, list[str], int]], templates: list[tuple[int, str]]) -> dict:
    """Write the generic sequence CSV, its label file and the templates; returns the counts."""
    out.mkdir(parents=True, exist_ok=True)
    n = anomalies = events = 0
    with open(out / SEQUENCES, "w", newline="") as s, open(out / LABELS, "w", newline="") as lab:
        sw, lw = csv.writer(s), csv.writer(lab)
        sw.writerow(["session_id", "events"])
        lw.writerow(["session_id", "label"])
        for sid, evs, label in sessions:
            sw.writerow([sid, " ".join(evs)])
            lw.writerow([sid, label])
            n, anomalies, events = n + 1, anomalies + label, events + len(evs)
    with open(out / TEMPLATES, "w", newline="") as t:
        tw = csv.writer(t)
        tw.writerow(["EventId", "EventTemplate"])
        for i, text in sorted(templates):
            tw.writerow([f"E{i}", text])
    return {"sessions": n, "anomalies": anomalies, "events": events, "templates": len(templates)}


def convert(system: str, src: Path, out: Path) -> dict:
    """Write ``out/{sequences,labels,templates}.csv`` for ``system`` from its shared folder ``src``."""
    if system == "openstack":
        files = [(src / "openstack_train", 0), (src / "openstack_test_normal", 0), (src / "openstack_test_abnormal", 1)]
        return write(out, ait_sessions(files), line_templates(src / "OpenStack_templates.csv"))
    if system == "hadoop":
        files = [(src / "hadoop_train", 0), (src / "hadoop_test_normal", 0), (src / "hadoop_test_abnormal.gz", 1)]
        return write(out, ait_sessions(files), line_templates(src / "Hadoop_templates.csv"))
    if system == "thunderbird":
        return write(out, krone_sessions(src / "ThunderBird_demo_sequences.csv.gz"),
                     krone_templates(src / "ThunderBird.log_templates.csv"))
    raise ValueError(f"unknown system {system!r}: {', '.join(SYSTEMS)}")


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[0] not in SYSTEMS:
        raise SystemExit(f"usage: python -m deeplog_spark.ingest.loghub {{{','.join(SYSTEMS)}}} SRC_DIR OUT_DIR")
    print(convert(argv[0], Path(argv[1]), Path(argv[2])))


if __name__ == "__main__":
    main(sys.argv[1:])
