"""The Drain3 template miner on hand-made lines: grouping, parameters, saved state, unknown
messages at scoring time, per-partition mining merged into one miner, and Loghub's accuracy."""

from __future__ import annotations

from deeplog_spark.ingest.mining import (REASON_UNKNOWN_TEMPLATE, UNKNOWN_TEMPLATE, Miner, grouping_accuracy, merge, mine,
                                  partition_templates, template_accuracy)

LINES = [
    "Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010",
    "Receiving block blk_2 src: /10.0.0.3:5001 dest: /10.0.0.4:50010",
    "PacketResponder 1 for block blk_1 terminating",
    "PacketResponder 0 for block blk_7 terminating",
    "Deleting block blk_1 file /data/1/blk_1",
    "Receiving block blk_9 src: /10.0.0.5:5002 dest: /10.0.0.6:50010",
]
TRUTH = ["E1", "E1", "E2", "E2", "E3", "E1"]


def test_miner_groups_messages_and_names_parameters():
    miner, ids = mine(LINES)
    assert ids[0] == ids[1] == ids[5] and ids[2] == ids[3] and len({ids[0], ids[2], ids[4]}) == 3
    assert grouping_accuracy(TRUTH, ids) == 1.0
    templates = miner.templates()
    assert templates[ids[2]] == "PacketResponder <*> for block blk_<*> terminating"  # numbers masked in tokens
    assert "<*>" in templates[ids[0]] and "Receiving block" in templates[ids[0]]


def test_saved_state_matches_new_data_to_the_same_ids_and_unknowns_to_the_reserved_id():
    miner, ids = mine(LINES)
    restored = Miner.from_state(miner.state())
    assert [restored.match(m) for m in LINES] == ids
    assert restored.match("PacketResponder 4 for block blk_42 terminating") == ids[2]  # new values, same template
    assert restored.match("kernel panic: attempted to kill init") == UNKNOWN_TEMPLATE == 0
    assert REASON_UNKNOWN_TEMPLATE == "unknown_template"
    assert restored.templates() == miner.templates()


def test_partitions_merge_into_one_miner_independent_of_partitioning():
    one = merge([partition_templates(LINES)])
    two = merge([partition_templates(LINES[:3]), partition_templates(LINES[3:])])
    assert one.templates() == two.templates()
    assert sorted(one.counts().values()) == [1, 2, 3]
    assert grouping_accuracy(TRUTH, [two.match(m) for m in LINES]) == 1.0


def test_accuracy_definitions():
    # a predicted group must hold exactly one truth group: merging E2 and E3 costs all three lines
    assert grouping_accuracy(TRUTH, [1, 1, 2, 2, 2, 1]) == 0.5
    assert grouping_accuracy(TRUTH, [1, 1, 2, 3, 4, 1]) == 4 / 6  # E2 split in two: both lines wrong
    assert template_accuracy(["a <*> b", "c"], ["a  <*> b", "d"]) == 0.5
