"""Why a node takes no new work (pure): silence and cordons are independent, and both are stored."""

from __future__ import annotations

from pai_scheduler.node_marks import Cordon, NodeMarks


def test_silence_and_cordon_do_not_undo_each_other() -> None:
    marks = NodeMarks(down={"a"})
    marks.cordon("a", Cordon("root", 1, "disk"))
    marks.down.discard("a")  # the agent is heard from again
    assert not marks.schedulable("a")  # still cordoned
    marks.uncordon("a")
    assert marks.schedulable("a")
    marks.cordon("b", Cordon("root", 2))
    marks.down.add("b")
    marks.uncordon("b")
    assert not marks.schedulable("b")  # still silent


def test_marks_survive_a_round_trip_and_old_state_reads_as_silence() -> None:
    marks = NodeMarks(down={"n.1"}, cordoned={"n.2": Cordon("root", 5, "bad fan", drain=True)})
    assert NodeMarks.from_doc(marks.to_doc(), []) == marks
    old = NodeMarks.from_doc(None, ["x", "y"])
    assert old.down == {"x", "y"} and old.cordoned == {}


def test_pending_note_names_the_cordoned_nodes_and_a_new_config_drops_gone_ones() -> None:
    marks = NodeMarks(down={"a", "gone"}, cordoned={"b": Cordon("root", 1), "gone": Cordon("root", 1)})
    assert marks.pending_note() == "; cordoned by an admin, taking no new work: b, gone"
    kept = marks.restricted_to(["a", "b"])
    assert kept.down == {"a"} and set(kept.cordoned) == {"b"}
    assert NodeMarks().pending_note() == ""
    copy = marks.copy()
    copy.uncordon("b")
    assert "b" in marks.cordoned
