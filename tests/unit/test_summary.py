"""Ledger value objects: any reject is storable as PostgreSQL text."""

from __future__ import annotations

from worker.summary import RejectedRow, pg_text, storable


def test_pg_text_replaces_nul_and_lone_surrogates() -> None:
    # Given text with a NUL and lone surrogates (a JSON "\ud800" decodes to one)
    value = "a\x00b\ud800c\udfffd"
    # Then each becomes U+FFFD and the text encodes as UTF-8
    assert pg_text(value) == "a\ufffdb\ufffdc\ufffdd"
    pg_text(value).encode("utf-8")
    assert pg_text("plain ✓") == "plain ✓"


def test_storable_cleans_every_field_of_a_reject() -> None:
    r = storable(RejectedRow(3, "ti\ud801tle" * 100, "bad \udc80 value", '{"t": "\ud800"}'))
    assert r.line == 3
    assert r.column is not None and len(r.column) == 200 and "\ufffd" in r.column
    assert r.reason == "bad \ufffd value" and r.raw == '{"t": "\ufffd"}'
    for text in (r.column, r.reason, r.raw):
        text.encode("utf-8")
