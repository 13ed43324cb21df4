"""Log formats of other systems, segmentation by id, lines and time, per-line label roll-up, Drain3
mining in Spark (masks, partitions, saved state, unknown messages at scoring time) and the generic
sequence input."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.ingest.formats import PRESETS, LogFormat, preset
from deeplog_spark.ingest.mining import MASKS, UNKNOWN_TEMPLATE, Miner
from deeplog_spark.ingest.runner import run_ingest, run_ingest_raw
from deeplog_spark.ingest.raw import masked, mined_fields, parse_fields, parse_mined, read_raw_logs, segment, sessions
from deeplog_spark.core.tables import read_table

LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"

# Real lines, copied from the Loghub 2k files (``../shared/data/loghub/<System>/<System>_2k.log``),
# with what Loghub's structured files say about them.
REAL = {
    "bgl": ("APPREAD 1117869872 2005.06.04 R04-M1-N4-I:J18-U11 2005-06-04-00.24.32.432192 R04-M1-N4-I:J18-U11 RAS APP "
            "FATAL ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569",
            {"label": "APPREAD", "node": "R04-M1-N4-I:J18-U11", "level": "FATAL", "component": "APP",
             "content": "ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569"},
            "2005-06-04 00:24:32.432192", 1, ["R04-M1-N4-I:J18-U11"]),
    "thunderbird": ("- 1131567043 2005.11.09 tbird-admin1 Nov 9 12:10:43 local@tbird-admin1 ioctl32(fdisk:515): Unknown "
                    "cmd fd(5) cmd(80081272){00} arg(ffffda44) on /dev/sda",
                    {"label": "-", "node": "tbird-admin1", "component": "ioctl32(fdisk:515)",
                     "content": "Unknown cmd fd(5) cmd(80081272){00} arg(ffffda44) on /dev/sda"},
                    "epoch 1131567043", 0, ["tbird-admin1"]),
    "hadoop": ("2015-10-18 18:06:21,076 WARN [RMCommunicator Allocator] org.apache.hadoop.ipc.Client: Address change "
               "detected. Old: msra-sa-41/10.190.173.170:8030 New: msra-sa-41:8030",
               {"level": "WARN", "process": "RMCommunicator Allocator", "component": "org.apache.hadoop.ipc.Client",
                "content": "Address change detected. Old: msra-sa-41/10.190.173.170:8030 New: msra-sa-41:8030"},
               "2015-10-18 18:06:21.076", None, []),
    "openstack": ("nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:04.500 2931 INFO nova.compute.manager "
                  "[req-3ea4052c-895d-4b64-9e2d-04d64c4d94ab - - - - -] [instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] "
                  "VM Started (Lifecycle Event)",
                  {"level": "INFO", "component": "nova.compute.manager",
                   "content": "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started (Lifecycle Event)"},
                  "2017-05-16 00:00:04.5", None, ["b9000564-fe1a-409b-b8cc-1e88b294cd1d"]),
    "spark": ("17/06/09 20:10:58 INFO executor.Executor: Running task 160.0 in stage 24.0 (TID 1155)",
              {"level": "INFO", "component": "executor.Executor", "content": "Running task 160.0 in stage 24.0 (TID 1155)"},
              "2017-06-09 20:10:58", None, None),
    "zookeeper": ("2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - "
                  "Notification time out: 3200",
                  {"level": "INFO", "node": "QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774",
                   "content": "Notification time out: 3200"},
                  "2015-07-29 17:41:44.747", None, None),
    # not real: no Spirit log was available; a line in the layout Spirit shares with Thunderbird
    "spirit": ("R_HDA_NR 1104566400 2005.01.01 sn373 Jan 1 00:00:00 sn373/sn373 kernel: hda: drive not ready for command",
               {"label": "R_HDA_NR", "node": "sn373", "component": "kernel", "content": "hda: drive not ready for command"},
               "epoch 1104566400", 1, ["sn373"]),
}


@pytest.mark.parametrize("system", sorted(REAL))
def test_presets_read_their_systems_lines(system):
    line, fields, _, _, _ = REAL[system]
    m = re.match(PRESETS[system].regex, line)
    assert m is not None
    assert {k: m.group(k) for k in fields} == fields


def test_presets_in_spark_timestamp_label_and_session(spark, tmp_path):
    for system, (line, fields, ts, label, ids) in REAL.items():
        fmt = PRESETS[system]
        path = tmp_path / f"{system}.log"
        path.write_text(line + "\n")
        by_id = ids is not None
        row = parse_fields(read_raw_logs(spark, str(path)), fmt, by_id).first()
        assert row["_ok"] and row["content"] == fields["content"], system
        want = (dt.datetime.fromtimestamp(int(ts.split()[1])) if ts.startswith("epoch")
                else dt.datetime.fromisoformat(ts))
        assert row["ts"] == want, system
        assert row["line_label"] == label, system
        assert row["block_ids"] == (ids or []), system


@pytest.mark.skipif(not LOGHUB.is_dir(), reason="needs ../shared/data/loghub (the shared Loghub samples)")
@pytest.mark.parametrize("system,folder", [("bgl", "BGL"), ("thunderbird", "Thunderbird"), ("hadoop", "Hadoop"),
                                           ("openstack", "OpenStack"), ("spark", "Spark"), ("zookeeper", "Zookeeper")])
def test_presets_on_every_line_of_the_2k_samples(system, folder):
    """Every real line parses, and its content is exactly Loghub's ground-truth Content."""
    rx = re.compile(PRESETS[system].regex)
    lines = (LOGHUB / folder / f"{folder}_2k.log").read_text(encoding="utf-8", errors="replace").splitlines()
    with open(LOGHUB / folder / f"{folder}_2k.log_structured.csv", encoding="utf-8", errors="replace") as fh:
        truth = [r["Content"] for r in csv.DictReader(fh)]
    assert len(lines) == len(truth) == 2000
    matches = [rx.match(line.rstrip("\r")) for line in lines]
    assert all(matches)
    assert [m.group("content").strip() for m in matches] == [t.strip() for t in truth]


def _shared_2k_lines(folder: str) -> list[str]:
    path = LOGHUB / folder / f"{folder}_2k.log"
    if not path.is_file():
        return []
    return [x.rstrip("\r") for x in path.read_text(encoding="utf-8", errors="replace").splitlines()]


FOLDERS = {"bgl": "BGL", "thunderbird": "Thunderbird", "hadoop": "Hadoop", "openstack": "OpenStack", "spark": "Spark",
           "zookeeper": "Zookeeper"}


def test_fields_in_spark_equal_pythons_regex_field_by_field(spark, tmp_path):
    """Spark (Java regex) gives every field that the format's Python regex gives, on each system's
    real lines (every line of its 2k sample when ../shared is there), on lines holding control
    characters, on lines that do not match, and for a user regex that is not anchored (the leftmost
    match)."""
    free = LogFormat("free", r"t=(?P<t>\d+) level=(?P<level>\w+)(?: comp=(?P<component>\w+))? msg=(?P<content>\S+)",
                     ("t",), "epoch")
    cases = [(free, ["x t=5 level=INFO msg=hello trailing", "t=6 level=WARN comp=disk msg=full", "t=7 level= msg=x",
                     "a t=1 level=A msg=b t=2 level=C msg=d", "t=8 level=INFO msg=\u0001sep"])]
    for system, (line, *_rest) in REAL.items():
        lines = _shared_2k_lines(FOLDERS.get(system, "")) or [line]
        cases.append((PRESETS[system], lines + [line + " \u0001x", "\u0002" + line, "not a log line", ""]))
    for fmt, lines in cases:
        path = tmp_path / f"{fmt.name}.log"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        got = parse_fields(read_raw_logs(spark, str(path)), fmt, False).orderBy("line_order").collect()
        rx = re.compile(fmt.regex)
        assert len(got) == len(lines), fmt.name
        for row, line in zip(got, lines):
            m = rx.search(line)
            assert row["_ok"] == (m is not None), (fmt.name, line)
            for name in ("level", "component", "content"):
                if fmt.has(name):
                    assert row[name] == ((m.group(name) or "") if m else None), (fmt.name, name, line)


def test_presets_fast_forms_give_the_fields_of_the_plain_forms():
    """The presets' cheaper regexes (date and time in one ``timestamp`` group, the syslog component
    written as an unrolled loop) give the same fields as the plain forms, on every real line of the 2k
    samples and on hand-made syslog lines with parentheses, brackets and colons in odd places."""
    lazy = PRESETS["thunderbird"].regex.replace(r"(?P<component>[^:\[(]*(?:\([^)]*\)[^:\[(]*)*)",
                                                r"(?P<component>(?:[^:\[(]|\([^)]*\))*?)")
    assert lazy != PRESETS["thunderbird"].regex
    odd = [f"- 1 2005.11.09 dn1 Nov 9 12:01:01 dn1/dn1 {rest}" for rest in (
        "comp(a:b) more: text", "comp[12]: text", "comp[x]: text", "comp(open: text", "comp: [1]: x", "(x)(y)[3]:z",
        "comp", "comp[12]x: y", "a(b[c]:d)e: f", ": empty component")]
    for system, folder in FOLDERS.items():
        fmt = PRESETS[system]
        lines = (_shared_2k_lines(folder) or [REAL[system][0]]) + (odd if system == "thunderbird" else [])
        fast = re.compile(fmt.regex)
        plain = re.compile(lazy if system == "thunderbird" else fmt.regex)
        for line in lines:
            a, b = fast.match(line), plain.match(line)
            assert (a is None) == (b is None), (system, line)
            if a:
                assert a.groupdict() == b.groupdict(), (system, line)
                if fmt.has("timestamp"):
                    assert a["timestamp"] == f"{a['date']} {a['time']}"
    assert PRESETS["thunderbird"].timestamp == ("epoch",) and PRESETS["hadoop"].timestamp == ("timestamp",)


def test_masks_match_what_drain3s_example_masks_match():
    """The masks equal Drain3's example masks (``((?<=[^A-Za-z0-9])|^)`` ... ``((?=[^A-Za-z0-9])|$)``),
    on hand-made edge cases and on every real content of the shared 2k samples."""
    example = [r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(:\d+)?((?=[^A-Za-z0-9])|$)",
               r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)",
               r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+(\.\d+)?)((?=[^A-Za-z0-9])|$)"]

    def mask(patterns, text):
        for pattern in patterns:
            text = re.sub(pattern, "<*>", text)
        return text

    texts = ["1.2.3.4.5 -1.2.3.4 x10.0.0.1 10.0.0.1:80x 0x1f 0x1fz a0x1 -3 +4.5 4.5.6 12ab ab12 7", "", "0", "-"]
    for system, folder in FOLDERS.items():
        texts += [re.match(PRESETS[system].regex, x).group("content") for x in _shared_2k_lines(folder)
                  if re.match(PRESETS[system].regex, x)]
    assert [mask([p for p, _ in MASKS], t) for t in texts] == [mask(example, t) for t in texts]


def test_format_errors_and_overrides():
    with pytest.raises(ValueError, match="content"):
        LogFormat("x", r"^(?P<msg>.*)$", ("msg",), "epoch")
    with pytest.raises(ValueError, match="no group"):
        LogFormat("x", r"^(?P<content>.*)$", ("time",), "epoch")
    with pytest.raises(ValueError, match="unknown log_format"):
        preset("syslog2")
    f = PRESETS["thunderbird"].with_overrides(session_regex=r"(dn\d+)")
    assert f.session_regex == r"(dn\d+)" and f.session_field == ""
    assert "(?P<" not in f.java_regex() and f.group("content") == re.compile(f.regex).groupindex["content"]
    # a user regex may name the time as the preset does, as one timestamp group, or as date and time
    hadoop = PRESETS["hadoop"]
    split = hadoop.with_overrides(regex=r"^(?P<date>\S+) (?P<time>\S+) (?P<content>.*)$")
    assert split.timestamp == ("date", "time")
    assert hadoop.with_overrides(regex=r"^(?P<timestamp>\S+ \S+) (?P<content>.*)$").timestamp == ("timestamp",)
    assert PRESETS["bgl"].with_overrides(regex=r"^(?P<node>\S+) (?P<time>\S+) (?P<content>.*)$").timestamp == ("time",)
    with pytest.raises(ValueError, match="no group"):
        hadoop.with_overrides(regex=r"^(?P<when>\S+) (?P<content>.*)$")


# -- segmentation -------------------------------------------------------------------------------------

# A tiny BGL-format log: (label, epoch seconds, node, content). Events by content: A=1, B=2, C=3.
TINY = [("-", 0, "n1", "A"), ("-", 10, "n2", "B"), ("KERNX", 20, "n1", "C"), ("-", 65, "n2", "A"),
        ("-", 70, "n1", "B"), ("-", 130, "n2", "B"), ("not a line", None, None, None)]
EVENT = {"A": 1, "B": 2, "C": 3}


def _bgl_line(label, t, node, content):
    if t is None:
        return label
    stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d-%H.%M.%S.000000")
    return f"{label} {t} 2005.06.03 {node} {stamp} {node} RAS KERNEL INFO {content}"


@pytest.fixture()
def tiny(spark, tmp_path):
    path = tmp_path / "tiny.log"
    path.write_text("\n".join(_bgl_line(*r) for r in TINY) + "\n")
    lines = read_raw_logs(spark, str(path))
    parsed = parse_fields(lines, PRESETS["bgl"]).withColumn(
        "event_id", F.create_map(*[x for k, v in EVENT.items() for x in (F.lit(k), F.lit(v))])[F.col("content")])
    from deeplog_spark.ingest.raw import with_reason

    return with_reason(parsed, PRESETS["bgl"], sessions_by_id=False)


def _segments(df):
    return {r["block_id"]: (r["events"], r["intervals"], r["trace_label"]) for r in sessions(df).collect()}


def test_segment_by_id_lines_and_time_with_labels_rolled_up(tiny):
    assert tiny.where(F.col("reason").isNotNull()).count() == 1  # the garbage line
    with pytest.raises(TypeError, match="segment"):
        sessions(tiny)  # parsed lines, not session rows
    assert _segments(segment(tiny, "id")) == {  # the bgl format's session field: the node
        "n1": ([1, 3, 2], [0.0, 20.0, 50.0], 1),
        "n2": ([2, 1, 2], [0.0, 55.0, 65.0], 0)}
    assert _segments(segment(tiny, "lines", segment_lines=4)) == {
        "tiny.log:000000": ([1, 2, 3, 1], [0.0, 10.0, 10.0, 45.0], 1),
        "tiny.log:000001": ([2, 2], [0.0, 60.0], 0)}
    # tumbling minutes
    assert _segments(segment(tiny, "time", window_seconds=60, window_step_seconds=60)) == {
        "1970-01-01 00:00:00": ([1, 2, 3], [0.0, 10.0, 10.0], 1),
        "1970-01-01 00:01:00": ([1, 2], [0.0, 5.0], 0),
        "1970-01-01 00:02:00": ([2], [0.0], 0)}
    # sliding: 2-minute windows every minute; a line is in every window that covers it
    assert _segments(segment(tiny, "time", window_seconds=120, window_step_seconds=60)) == {
        "1969-12-31 23:59:00": ([1, 2, 3], [0.0, 10.0, 10.0], 1),
        "1970-01-01 00:00:00": ([1, 2, 3, 1, 2], [0.0, 10.0, 10.0, 45.0, 5.0], 1),
        "1970-01-01 00:01:00": ([1, 2, 2], [0.0, 5.0, 60.0], 0),
        "1970-01-01 00:02:00": ([2], [0.0], 0)}


def test_time_windows_refuse_gaps(tiny):
    from deeplog_spark.core.errors import InputError

    with pytest.raises(InputError, match="window_step_seconds"):
        segment(tiny, "time", window_seconds=60, window_step_seconds=120)


# -- mining in Spark ----------------------------------------------------------------------------------


def test_masks_in_spark_equal_drain3s(spark):
    """The JVM masks what Drain3's own masker masks: on every real content of the shared 2k samples
    (a few real contents without ../shared), and on texts where a mask is skipped because its literal
    (an IP's dot, hex's 0x) is missing."""
    from drain3.masking import LogMasker, MaskingInstruction

    contents = [REAL[s][1]["content"] for s in REAL] + [
        "generating core.45943", "0x00000001 -12 +3.5 10.1.2.3:50010 ab12 1a2b 2005-06-03 x=7",
        "ciod: LOGIN chdir(/home/x) failed: No such file or directory",
        "value 0x1f only", "count 12 of 0X1F", "no digits here", "ip 10.0.0.1", "1.2.3.4", "0x1", "  7  "]
    for system, folder in FOLDERS.items():
        contents += [m.group("content") for m in map(re.compile(PRESETS[system].regex).match, _shared_2k_lines(folder))
                     if m]
    drain = LogMasker([MaskingInstruction(p, m) for p, m in MASKS], "<", ">")
    df = spark.createDataFrame([(c,) for c in contents], "content string")
    got = [r[0] for r in df.select(masked(F.col("content"))).collect()]
    assert got == [drain.mask(c.strip()) for c in contents]


HAND = ["Receiving block blk_1 src: /10.0.0.1:5000", "Receiving block blk_2 src: /10.0.0.3:5001",
        "PacketResponder 1 for block blk_1 terminating", "PacketResponder 0 for block blk_7 terminating",
        "Deleting block blk_1 file /data/1/blk_1", "Receiving block blk_9 src: /10.0.0.5:5002"]


def _bgl_file(path: Path, contents, t0=0, label="-"):
    path.write_text("\n".join(_bgl_line(label, t0 + i, "n1", c) for i, c in enumerate(contents)) + "\n")
    return str(path)


def test_mined_ids_do_not_depend_on_the_partitioning(spark, tmp_path):
    path = _bgl_file(tmp_path / "a.log", HAND * 3)
    bgl = PRESETS["bgl"]
    one, m1 = parse_mined(mined_fields(read_raw_logs(spark, path).coalesce(1), bgl, False), bgl, None, sessions_by_id=False)
    four, m4 = parse_mined(mined_fields(read_raw_logs(spark, path).repartition(4), bgl, False), bgl, None,
                           sessions_by_id=False)
    assert m1.templates() == m4.templates() and len(m1.templates()) == 3
    content = re.compile(bgl.regex)
    ids1 = {content.match(r["line"]).group("content"): r["event_id"] for r in one.collect()}
    ids4 = {content.match(r["line"]).group("content"): r["event_id"] for r in four.collect()}
    assert ids1 == ids4 and None not in ids1.values()
    assert ids1[HAND[0]] == ids1[HAND[1]] == ids1[HAND[5]] == 1  # the most frequent template has id 1
    # the same grouping as the Python miner on the lines themselves
    py = Miner()
    for c in HAND * 3:
        py.add(c)
    assert sorted(py.templates().values()) == sorted(m1.templates().values())


def test_raw_ingest_mines_saves_its_state_and_a_new_batch_keeps_ids_and_marks_unknowns(spark, cfg, tmp_path):
    day1 = _bgl_file(tmp_path / "day1.log", HAND * 2)
    base = cfg.replace(input="raw_logs", log_format="bgl", segment="lines", segment_lines=4, anomaly_labels="",
                       raw_logs=day1, templates_from="auto")
    out1 = run_ingest_raw(spark, base)
    assert out1["templates_from"] == "mine" and out1["templates"] == 3 and out1["rejected_lines"] == 0
    state = read_table(spark, base.table_path(schemas.MINER_STATE)).first()
    assert state["templates"] == 3 and Miner.from_state(state["state"]).templates() == {
        r["event_id"]: r["template"] for r in read_table(spark, base.table_path(schemas.TEMPLATES)).collect()}
    # a second day: known messages with new values, and one message no saved template matches
    day2 = _bgl_file(tmp_path / "day2.log", ["PacketResponder 4 for block blk_42 terminating",
                                             "kernel panic: attempted to kill init", HAND[4]], t0=100, label="KERNPAN")
    out2 = run_ingest_raw(spark, base.replace(raw_logs=day2, append=True))
    assert out2["templates_from"] == "state" and out2["unknown_template_lines"] == 1 and out2["rejected_lines"] == 0
    traces = read_table(spark, base.table_path(schemas.TRACES)).where(F.col("ingest_batch") == "day2.log").collect()
    first = read_table(spark, base.table_path(schemas.TRACES)).where(F.col("ingest_batch") == "day1.log").collect()
    ids1 = {e for r in first for e in r["events"]}
    assert len(traces) == 1 and traces[0]["events"][1] == UNKNOWN_TEMPLATE and traces[0]["label"] == 1
    assert {traces[0]["events"][0], traces[0]["events"][2]} <= ids1  # same ids as day 1
    counts = read_table(spark, base.table_path(schemas.TEMPLATE_COUNTS)).where(F.col("ingest_batch") == "day2.log")
    assert {r["event_id"]: r["lines"] for r in counts.where(F.col("lines") > 0).collect()}[UNKNOWN_TEMPLATE] == 1
    # an explicit re-mine onto the saved state would renumber day 1: refused
    from deeplog_spark.core.errors import InputError

    with pytest.raises(InputError, match="renumber"):
        run_ingest_raw(spark, base.replace(raw_logs=day2, append=True, templates_from="mine"))


# -- the generic sequence input -------------------------------------------------------------------------


def test_generic_sequences_with_a_label_file(spark, cfg, tmp_path):
    (tmp_path / "templates.csv").write_text("EventId,EventTemplate\nE1,start <*>\nE2,stop\nE3,retry <*>\n")
    (tmp_path / "seq.csv").write_text("session_id,events\n"
                                      "vm-1,1 2\nvm-2,\"[1, 3, 2]\"\nvm-3,E1 E3\nvm-4,1 9\nvm-5,\nvm-1,2\n")
    (tmp_path / "labels.csv").write_text("session_id,label\nvm-2,1\nvm-3,0\nvm-4,Anomaly\nvm-6,0\n")
    c = cfg.replace(input="sequences", sequences=str(tmp_path / "seq.csv"), anomaly_labels=str(tmp_path / "labels.csv"),
                    templates=str(tmp_path / "templates.csv"))
    out = run_ingest(spark, c)
    traces = {r["block_id"]: (r["events"], r["label"]) for r in read_table(spark, c.table_path(schemas.TRACES)).collect()}
    assert traces == {"vm-2": ([1, 3, 2], 1), "vm-3": ([1, 3], 0)}
    rejects = {(r["source"], r["block_id"]): r["reason"]
               for r in read_table(spark, c.table_path(schemas.INGEST_REJECTS)).collect()}
    assert rejects == {("sequences", "vm-1"): "duplicate_block_id", ("sequences", "vm-4"): "unknown_event_key",
                       ("sequences", "vm-5"): "empty_sequence", ("anomaly_labels", "vm-6"): "label_unknown_block"}
    assert out["trace_rows"] == 6 == out["traces"] + out["trace_rejects"]


def test_generic_sequences_with_a_label_column(spark, cfg, tmp_path):
    (tmp_path / "templates.csv").write_text("EventId,EventTemplate\nE1,a\nE2,b\n")
    (tmp_path / "seq.csv").write_text("session_id,events,label\ns1,1 2,0\ns2,2 1,1\ns3,1,maybe\n")
    c = cfg.replace(input="sequences", sequences=str(tmp_path / "seq.csv"), anomaly_labels="",
                    templates=str(tmp_path / "templates.csv"))
    run_ingest(spark, c)
    traces = {r["block_id"]: r["label"] for r in read_table(spark, c.table_path(schemas.TRACES)).collect()}
    assert traces == {"s1": 0, "s2": 1}
    assert [r["reason"] for r in read_table(spark, c.table_path(schemas.INGEST_REJECTS)).collect()] == ["malformed_label"]


def test_loghub_converters_write_the_generic_input(tmp_path):
    """ait's files labelled by file, KRONE's list literals (ints and quoted ints), headerless and
    indexed template files: the generic CSVs the sequence ingest reads."""
    from deeplog_spark.ingest.loghub import convert

    ait = tmp_path / "ait"
    ait.mkdir()
    (ait / "openstack_train").write_text("i-1,1 2 3\n")
    (ait / "openstack_test_normal").write_text("i-2,1 2\n\n")
    (ait / "openstack_test_abnormal").write_text("i-3,3 1\n")
    (ait / "OpenStack_templates.csv").write_text("[instance: <*>] Claim successful\nTerminating, \"quoted\"\nok\n")
    assert convert("openstack", ait, tmp_path / "os") == {"sessions": 3, "anomalies": 1, "events": 7, "templates": 3}
    with open(tmp_path / "os" / "sequences.csv") as fh:
        assert list(csv.reader(fh)) == [["session_id", "events"], ["i-1", "1 2 3"], ["i-2", "1 2"], ["i-3", "3 1"]]
    with open(tmp_path / "os" / "labels.csv") as fh:
        assert list(csv.reader(fh))[1:] == [["i-1", "0"], ["i-2", "0"], ["i-3", "1"]]
    with open(tmp_path / "os" / "templates.csv") as fh:
        assert list(csv.reader(fh))[1:] == [["E1", "[instance: <*>] Claim successful"],
                                            ["E2", 'Terminating, "quoted"'], ["E3", "ok"]]
    kr = tmp_path / "krone"
    kr.mkdir()
    (kr / "ThunderBird_demo_sequences.csv").write_text(
        "seq_id,admin,Label,EventSequence,token_anomaly_label\n"
        "4,an1,0,\"['10', '2']\",\"[0, 0]\"\n7,dn2,1,\"[6, 6, 2]\",\"[1, 1, 0]\"\n")
    import gzip as gz

    (kr / "ThunderBird_demo_sequences.csv.gz").write_bytes(gz.compress((kr / "ThunderBird_demo_sequences.csv").read_bytes()))
    (kr / "ThunderBird.log_templates.csv").write_text(",EventId,ori_EventId,EventTemplate\n0,6,ab,kernel: <*> failed\n"
                                                      "1,2,cd,snmpd trap\n2,10,ef,x\n")
    assert convert("thunderbird", kr, tmp_path / "tb")["anomalies"] == 1
    with open(tmp_path / "tb" / "sequences.csv") as fh:
        assert list(csv.reader(fh))[1:] == [["an1/4", "10 2"], ["dn2/7", "6 6 2"]]
    with open(tmp_path / "tb" / "templates.csv") as fh:
        assert [r[0] for r in list(csv.reader(fh))[1:]] == ["E2", "E6", "E10"]


def test_loghub_converter_takes_some_files_and_a_templates_file_elsewhere(tmp_path, capsys):
    """``--only openstack_train`` alone (the way that set is meant to be trained on), ``--templates``
    elsewhere, and a missing file as one ``error:`` line naming it, exit 2, not a traceback."""
    from deeplog_spark.ingest.loghub import main

    ait = tmp_path / "ait"
    ait.mkdir()
    (ait / "openstack_train").write_text("i-1,1 2 3\ni-2,1 2\n")
    (tmp_path / "t.csv").write_text("a\nb\nc\n")
    with pytest.raises(SystemExit) as missing:
        main(["openstack", str(ait), str(tmp_path / "out"), "--only", "openstack_train"])
    assert missing.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: openstack: templates file") and "--templates PATH" in err and "Traceback" not in err
    main(["openstack", str(ait), str(tmp_path / "out"), "--only", "openstack_train", "--templates", str(tmp_path / "t.csv")])
    assert "'sessions': 2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as unknown:
        main(["openstack", str(ait), str(tmp_path / "out"), "--only", "openstack_tran"])
    assert unknown.value.code == 2 and "openstack_train" in capsys.readouterr().err
