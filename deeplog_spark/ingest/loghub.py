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
    python -m deeplog_spark.ingest.loghub openstack SRC OUT --only openstack_train --templates T.csv

``--only`` converts some of the system's files (the small ``openstack_train`` alone, say);
``--templates`` names a templates file that is not beside them. A missing file is one ``error:``
line (exit 2) that names it.
"""

from __future__ import annotations

import ast
import csv
import gzip
import sys
from pathlib import Path
from typing import Iterable, Iterator

from deeplog_spark.core.errors import InputError

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


#: Per system: its session files with their labels, its templates file and how to read both.
LAYOUTS = {
    "openstack": ([("openstack_train", 0), ("openstack_test_normal", 0), ("openstack_test_abnormal", 1)],
                  "OpenStack_templates.csv"),
    "hadoop": ([("hadoop_train", 0), ("hadoop_test_normal", 0), ("hadoop_test_abnormal.gz", 1)], "Hadoop_templates.csv"),
    "thunderbird": ([("ThunderBird_demo_sequences.csv.gz", None)], "ThunderBird.log_templates.csv"),
}


def convert(system: str, src: Path, out: Path, templates: Path | None = None,
            only: Iterable[str] | None = None) -> dict:
    """Write ``out/{sequences,labels,templates}.csv`` for ``system`` from its shared folder ``src``
    (``only``: some of its session files; ``templates``: a templates file elsewhere)."""
    if system not in LAYOUTS:
        raise ValueError(f"unknown system {system!r}: {', '.join(SYSTEMS)}")
    files, default_templates = LAYOUTS[system]
    if only:
        wanted = set(only)
        unknown = wanted - {name for name, _ in files}
        if unknown:
            raise InputError(f"--only {','.join(sorted(unknown))}: {system} has the files "
                             f"{', '.join(name for name, _ in files)}")
        files = [(name, label) for name, label in files if name in wanted]
    chosen = [(src / name, label) for name, label in files]
    templates = templates or src / default_templates
    for path, what in [*((p, "session file") for p, _ in chosen), (templates, "templates file")]:
        if not path.is_file():
            hint = " (pass --templates PATH when it is elsewhere)" if what == "templates file" else ""
            raise InputError(f"{system}: {what} {path} not found{hint}")
    if system == "thunderbird":
        return write(out, krone_sessions(chosen[0][0]), krone_templates(templates))
    return write(out, ait_sessions(chosen), line_templates(templates))


def main(argv: list[str]) -> None:
    args = list(argv)
    options = {}
    for flag in ("--templates", "--only"):
        if flag in args:
            i = args.index(flag)
            if i + 1 >= len(args):
                raise SystemExit(f"error: {flag} needs a value")
            options[flag[2:]] = args.pop(i + 1)
            args.pop(i)
    if len(args) != 3 or args[0] not in SYSTEMS:
        raise SystemExit(f"usage: python -m deeplog_spark.ingest.loghub {{{','.join(SYSTEMS)}}} SRC_DIR OUT_DIR "
                         "[--only FILE[,FILE]] [--templates PATH]")
    try:
        print(convert(args[0], Path(args[1]), Path(args[2]),
                      Path(options["templates"]) if "templates" in options else None,
                      options["only"].split(",") if "only" in options else None))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
