r"""Log formats as configuration: one line regex with named fields per system (no Spark import).

A :class:`LogFormat` says how to read one line of a system's log:

- ``regex``: a Python-syntax regular expression with named groups (``(?P<content>...)``). It must
  have a ``content`` group (the free text that templates are mined from or matched against) and
  may have ``level``, ``component``, a ``label`` group (BGL, Thunderbird: ``-`` is a normal line)
  and any other field; a line it does not match is rejected as ``malformed_log_line``.
- ``timestamp``: the groups that together form the line's time, joined by one space, and
  ``timestamp_format``, a Spark datetime pattern (``yyyy-MM-dd HH:mm:ss,SSS``) or ``epoch`` (Unix
  seconds). Lines whose time does not parse are rejected as ``malformed_timestamp``.
- how sessions are found when segmenting by id: ``session_regex`` (one capturing group, every
  match in the content is a session the line belongs to: HDFS ``blk_`` ids, OpenStack instance
  ids) or ``session_field`` (a named group: Thunderbird's node).

The presets below were checked on the 2,000 real lines of each shared Loghub ``*_2k.log``
(``tests/test_formats.py``), except Spirit: no Spirit log was available, so its preset is the
Thunderbird layout that the Spirit, Thunderbird and Liberty logs share (Oliner and Stearley, DSN
2007), tested on a line written in that layout, not on real Spirit data.

Each field a line needs costs one match of the line regex in Spark, so the presets keep them few:
the date and time sit inside one ``timestamp`` group (one match where two were needed), and the
syslog-like component (plain characters and parenthesised parts, up to the first ``:`` or ``[``
outside parentheses) is written as an unrolled greedy loop, ``[^:\[(]*(?:\([^)]*\)[^:\[(]*)*``,
where a lazy alternation ``(?:[^:\[(]|\([^)]*\))*?`` tried the rest of the line after every
character. It has one way to match, so both give the same fields, and it never backtracks
through the rest of the line (``bench/results/raw_parse_multi.md`` has the throughput).

Spark uses Java regular expressions: :meth:`LogFormat.java_regex` drops the group names (Java's
names cannot hold ``_``) and :meth:`LogFormat.group` gives each field's group number.
"""

from __future__ import annotations

import dataclasses
import re

#: ``timestamp_format`` of a time given as Unix seconds (possibly with a fraction).
EPOCH = "epoch"
#: Value of a ``label`` field that marks a normal line (BGL, Thunderbird, Spirit).
NORMAL_LABEL = "-"
#: Ways to cut the lines of a log into sessions (``segment`` in the config).
SEGMENTS = ("id", "lines", "time")


@dataclasses.dataclass(frozen=True)
class LogFormat:
    name: str
    regex: str
    timestamp: tuple[str, ...]
    timestamp_format: str
    session_regex: str = ""
    session_field: str = ""
    doc: str = ""

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"log format {self.name}: bad line regex: {exc}") from exc
        names = compiled.groupindex
        if "content" not in names:
            raise ValueError(f"log format {self.name}: the line regex needs a (?P<content>...) group")
        missing = [g for g in (*self.timestamp, *([self.session_field] if self.session_field else [])) if g not in names]
        if missing:
            raise ValueError(f"log format {self.name}: the line regex has no group(s) {', '.join(missing)}; "
                             f"it has {', '.join(names)}")
        if not self.timestamp:
            raise ValueError(f"log format {self.name}: name the group(s) holding the timestamp")
        if self.session_regex:
            try:
                groups = re.compile(self.session_regex).groups
            except re.error as exc:
                raise ValueError(f"log format {self.name}: bad session_regex: {exc}") from exc
            if groups < 1:
                raise ValueError(f"log format {self.name}: session_regex needs a capturing group (the session id)")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(re.compile(self.regex).groupindex)

    def group(self, name: str) -> int:
        """The group number of field ``name`` (the same in Python and Java)."""
        return re.compile(self.regex).groupindex[name]

    def java_regex(self) -> str:
        """The line regex for Spark (Java): the same groups, unnamed."""
        return re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(", self.regex)

    def has(self, name: str) -> bool:
        return name in re.compile(self.regex).groupindex

    def with_overrides(self, regex: str = "", timestamp_format: str = "", session_regex: str = "",
                       session_field: str = "") -> "LogFormat":
        """This format with the non-empty overrides (the config's ``line_regex`` etc.).

        A ``regex`` that lacks the preset's timestamp groups may name the time as one ``timestamp``
        group, or as ``date`` and ``time`` groups (joined by one space), whatever the preset uses."""
        changes = {k: v for k, v in (("regex", regex), ("timestamp_format", timestamp_format),
                                     ("session_regex", session_regex), ("session_field", session_field)) if v}
        if regex:
            try:
                names = re.compile(regex).groupindex
            except re.error:
                names = {}  # __post_init__ reports the bad regex
            if not all(g in names for g in self.timestamp):
                changes["timestamp"] = next((alt for alt in (("timestamp",), ("date", "time"))
                                             if all(g in names for g in alt)), self.timestamp)
        if "session_regex" in changes:
            changes.setdefault("session_field", "")
        elif "session_field" in changes:
            changes["session_regex"] = ""
        return dataclasses.replace(self, **changes) if changes else self


_SYSLOG_LIKE = (r"^(?P<label>\S+) (?P<epoch>\d+) (?P<date>\S+) (?P<node>\S+) (?P<month>\S+) +(?P<day>\d+) "
                r"(?P<time>\S+) (?P<location>\S+) (?P<component>[^:\[(]*(?:\([^)]*\)[^:\[(]*)*)(?:\[(?P<pid>\d+)\])?: ?"
                r"(?P<content>.*)$")

#: log4j's default date and time (Hadoop, ZooKeeper): 2015-10-18 18:01:47,978
_LOG4J_TIME = r"^(?P<timestamp>(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}:\d{2},\d{3})) "

PRESETS: dict[str, LogFormat] = {f.name: f for f in (
    LogFormat("hdfs", r"^(?P<timestamp>(?P<date>\d{6}) (?P<time>\d{6})) (?P<pid>\d+) (?P<level>[A-Z]+) "
                      r"(?P<component>[^ :]+): (?P<content>.*)$",
              ("timestamp",), "yyMMdd HHmmss", session_regex=r"(blk_-?\d+)",
              doc="HDFS_v1: 081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_..."),
    LogFormat("bgl", r"^(?P<label>\S+) (?P<epoch>\d+) (?P<date>\S+) (?P<node>\S+) (?P<time>\S+) (?P<node_repeat>\S+) "
                     r"(?P<type>\S+) (?P<component>\S+) (?P<level>\S+) ?(?P<content>.*)$",
              ("time",), "yyyy-MM-dd-HH.mm.ss.SSSSSS", session_field="node",
              doc="Blue Gene/L: label, epoch, date, node, time, node again, type, component, level, content"),
    LogFormat("thunderbird", _SYSLOG_LIKE, ("epoch",), EPOCH, session_field="node",
              doc="Thunderbird: label, epoch, date, node, syslog month day time, location, component[pid]: content"),
    LogFormat("spirit", _SYSLOG_LIKE, ("epoch",), EPOCH, session_field="node",
              doc="Spirit: the Thunderbird layout (not checked on real Spirit lines; none were available)"),
    LogFormat("hadoop", _LOG4J_TIME + r"(?P<level>[A-Z]+) \[(?P<process>[^\]]*)\] (?P<component>[^ :]+): ?"
                                      r"(?P<content>.*)$",
              ("timestamp",), "yyyy-MM-dd HH:mm:ss,SSS", session_regex=r"(container_\d+_\d+_\d+_\d+)",
              doc="Hadoop MapReduce: date time level [process] component: content; sessions by YARN container"),
    LogFormat("openstack", r"^(?P<logrecord>\S+) "
                           r"(?P<timestamp>(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}:\d{2}\.\d{3})) "
                           r"(?P<pid>\d+) (?P<level>[A-Z]+) (?P<component>\S+) \[(?P<addr>[^\]]*)\] ?(?P<content>.*)$",
              ("timestamp",), "yyyy-MM-dd HH:mm:ss.SSS",
              session_regex=r"\[instance: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]",
              doc="OpenStack nova: log file, date time pid level component [request] content; sessions by VM instance"),
    LogFormat("spark", r"^(?P<timestamp>(?P<date>\d{2}/\d{2}/\d{2}) (?P<time>\d{2}:\d{2}:\d{2})) (?P<level>[A-Z]+) "
                       r"(?P<component>[^ :]+): ?(?P<content>.*)$",
              ("timestamp",), "yy/MM/dd HH:mm:ss",
              doc="Spark (log4j): date time level component: content"),
    LogFormat("zookeeper", _LOG4J_TIME + r"- (?P<level>[A-Z]+) +\[(?P<node>.*?)\] - ?(?P<content>.*)$",
              ("timestamp",), "yyyy-MM-dd HH:mm:ss,SSS",
              doc="ZooKeeper (log4j): date time - level [thread:component@line] - content"),
)}


def preset(name: str) -> LogFormat:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown log_format {name!r}; presets: {', '.join(PRESETS)} "
                         "(or any preset with --line_regex)") from None
