"""The usage journal: written ahead, read back one row per request, dropped once committed."""

from __future__ import annotations

from pathlib import Path

from npucenter.metering.journal import UsageJournal, read_segments
from npucenter.metering.ledger import UsageRecord


def _rec(request_id: str, out: int = 3, device_s: float = 0.0) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant="acme",
        key_id="key-1",
        service="m",
        endpoint="/v1/chat/completions",
        output_tokens=out,
        device_s=device_s,
    )


def test_a_settlement_wins_over_its_reservation_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    journal.write(_rec("a", out=5), final=False)  # reservation: the tokens sent
    journal.write(_rec("a", out=5, device_s=0.7), final=True)  # settlement: device time too
    journal.write(_rec("b", out=2), final=False)  # killed before its settlement
    journal.close()
    segment = next(tmp_path.glob("usage-*.jsonl"))
    with segment.open("ab") as handle:
        handle.write(b'{"final":true,"request_id":"c","ten')  # the process died mid-write
    rows = {r.request_id: r for r in read_segments([segment])}
    assert set(rows) == {"a", "b"}
    assert rows["a"].device_s == 0.7 and rows["b"].output_tokens == 2


def test_segments_are_deleted_once_every_request_in_them_is_committed(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, max_lines=2)
    for rid in ("a", "b"):
        journal.write(_rec(rid), final=True)
    journal.committed(["a"])  # rotates (2 lines): the old segment still names "b"
    journal.write(_rec("c"), final=True)
    assert len(list(tmp_path.glob("usage-*.jsonl"))) == 2
    journal.committed(["b"])
    assert {r.request_id for r in read_segments(sorted(tmp_path.glob("usage-*.jsonl")))} == {"c"}
    journal.committed(["c"])
    assert [r.request_id for r in read_segments(sorted(tmp_path.glob("usage-*.jsonl")))] == []


def test_a_new_journal_hands_over_what_a_killed_process_left(tmp_path: Path) -> None:
    first = UsageJournal(tmp_path)
    first.write(_rec("a"), final=True)  # never committed
    live = UsageJournal(tmp_path)  # another live process: it leaves first's segment alone
    assert live.leftover() == []
    live.close()
    first.close()  # the process dies here: its locks go with it
    second = UsageJournal(tmp_path)
    left = second.leftover()
    assert [r.request_id for r in read_segments(left)] == ["a"]
    second.discard(left)
    second.write(_rec("z"), final=True)
    assert [r.request_id for r in read_segments(sorted(tmp_path.glob("usage-*.jsonl")))] == ["z"]
