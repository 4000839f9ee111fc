"""``results.jsonl`` and ``results.csv``: the rows as files for machines (pure)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from runner.results.rows import Row, as_json

JSONL_NAME = "results.jsonl"
CSV_NAME = "results.csv"

#: The columns of ``results.csv``, in order (``results.jsonl`` has the same fields).
CSV_COLUMNS = (
    "id",
    "status",
    "video",
    "sha256",
    "prompt",
    "image",
    "model",
    "prediction_id",
    "predict_time",
    "cost",
    "error",
    "error_code",
    "duplicate_of",
    "meta",
)
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP):
#: such a text cell gets a leading apostrophe in the CSV, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def jsonl_bytes(rows: Sequence[Row]) -> bytes:
    """``results.jsonl``: one JSON object per row (``rows.as_json``), UTF-8."""
    lines = (json.dumps(as_json(row), ensure_ascii=False) + "\n" for row in rows)
    return "".join(lines).encode()


def csv_bytes(rows: Sequence[Row]) -> bytes:
    """``results.csv``: a header of ``CSV_COLUMNS``, then one line per row, UTF-8 with RFC
    4180 quoting. Money is the exact decimal (``0.43``), ``meta`` compact JSON, an absent value
    an empty cell; a text that a spreadsheet would run as a formula starts with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        record = as_json(row)
        record["cost"] = "" if row.cost is None else str(row.cost)
        meta = record["meta"]
        record["meta"] = "" if meta is None else json.dumps(meta, ensure_ascii=False)
        writer.writerow(_cell(record[column]) for column in CSV_COLUMNS)
    return out.getvalue().encode()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)
