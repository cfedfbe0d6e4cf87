"""PII detectors for ``contract infer``: regexes plus checksums (Luhn, IBAN mod 97), in DuckDB SQL.

Precision comes first: a column is flagged only when at least ``THRESHOLD`` of its sampled
non-null values pass a detector that a random id, amount or date cannot pass by chance
(card numbers must pass Luhn, which 1 in 10 random digit strings do; IBANs mod 97; phone
numbers need a ``+`` or phone-style separators, or a phone-like column name; names need a
name-like column name). All detectors run as one aggregate query over the sample.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from oxiflow.engine.duck import ident, literal

if TYPE_CHECKING:
    import duckdb

THRESHOLD = 0.9

EMAIL = r"[^@\s\"(),:;<>\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_H = "[0-9A-Fa-f]{1,4}"
IPV6 = (
    rf"(({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}|({_H}:){{1,4}}(:{_H}){{1,3}}"
    rf"|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}|{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:))"
)
# international (+CC ...) or grouped national formats: (030) 1234-5678, 030 1234 5678, 415-555-0132
PHONE_INTL = r"\+[1-9][0-9]{0,2}[ .-]?(\(?[0-9]{1,4}\)?[ .-]?){1,4}[0-9]{2,4}"
PHONE_GROUPED = r"\(?0?[0-9]{2,4}\)?[ .-][0-9]{3,4}[ .-]?[0-9]{3,4}"
CARD = r"[0-9]{13,19}|[0-9]{4}([ -][0-9]{4}){2}[ -][0-9]{4}([0-9]{3})?"
IBAN = r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}"
NAME_VALUE = r"[A-ZÀ-Þ][A-Za-zÀ-ÿ'’]*[a-zß-ÿ]([ -][A-ZÀ-Þ][A-Za-zÀ-ÿ'’]*[a-zß-ÿ])*"
DATE_LIKE = r"[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}.*|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4}.*"
NAME_COLUMN = re.compile(
    r"(?i)^(.*[_ ])?(first|last|given|family|middle|full|maiden|sur|fore)[_ ]?name$|^surname$|^forename$"
    r"|^(customer|client|person|contact|employee|patient|holder|account_holder|user)[_ ]?name$"
)
PHONE_COLUMN = re.compile(r"(?i)(phone|mobile|tel|fax|cell)")

# 10^k mod 97 for k = 0..95 (the powers cycle with period 96): IBAN mod 97 as a sum of digits
_POW10_MOD97 = [pow(10, k, 97) for k in range(96)]


def _luhn_ok(digits: str) -> str:
    """SQL: the Luhn checksum of a digit string is valid."""
    r = f"reverse({digits})"
    d = f"TRY_CAST(substr({r}, i + 1, 1) AS INTEGER)"
    term = f"CASE WHEN i % 2 = 1 THEN (CASE WHEN {d} * 2 > 9 THEN {d} * 2 - 9 ELSE {d} * 2 END) ELSE {d} END"
    return f"(list_sum([{term} FOR i IN range(length({digits}))]) % 10 = 0)"


def _iban_ok(s: str) -> str:
    """SQL: the IBAN mod-97 check (letters A..Z -> 10..35, first four characters moved last)."""
    moved = f"(substr({s}, 5) || substr({s}, 1, 4))"
    digits = (
        f"array_to_string([CASE WHEN c BETWEEN 'A' AND 'Z' THEN CAST(ascii(c) - 55 AS VARCHAR) ELSE c END "
        f"FOR c IN string_split({moved}, '')], '')"
    )
    pows = literal(_POW10_MOD97)
    total = (
        f"list_sum([TRY_CAST(substr(dd, i, 1) AS INTEGER) * {pows}[((length(dd) - i) % 96) + 1] "
        f"FOR i IN range(1, length(dd) + 1)])"
    )
    return f"(SELECT {total} % 97 = 1 FROM (SELECT {digits} AS dd))"


def detect(con: duckdb.DuckDBPyConnection, relation: str, column: str, family: str, sample: int) -> str | None:
    """The PII kind of ``column`` (email, phone, card_number, ip_address, iban, name) or None."""
    if family not in ("string", "integer"):
        return None  # dates, amounts, booleans: none of the detectors can apply
    col = ident(column)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE oxiflow_pii AS SELECT trim(CAST({col} AS VARCHAR)) AS v "
        f"FROM {relation} WHERE {col} IS NOT NULL LIMIT {int(sample)}"
    )
    row = con.execute("SELECT count(*) FROM oxiflow_pii").fetchone()
    if not row or row[0] == 0:
        return None
    compact = "regexp_replace(v, '[ -]', '', 'g')"
    iban_s = "upper(replace(v, ' ', ''))"
    m = lambda rx: f"regexp_full_match(v, {literal(rx)})"  # noqa: E731
    phone_value = (
        f"NOT {m(DATE_LIKE)} AND length(regexp_replace(v, '[^0-9]', '', 'g')) BETWEEN 8 AND 15 "
        f"AND ({m(PHONE_INTL)} OR {m(PHONE_GROUPED)}"
        + (f" OR {m('[0-9]{8,15}')}" if PHONE_COLUMN.search(column) else "")
        + ")"
    )
    shares = {
        "email": m(EMAIL),
        "card_number": f"CASE WHEN {m(CARD)} THEN {_luhn_ok(compact)} ELSE false END",
        "iban": f"CASE WHEN regexp_full_match({iban_s}, {literal(IBAN)}) THEN {_iban_ok(iban_s)} ELSE false END",
        "ip_address": f"{m(IPV4)} OR {m(IPV6)}",
        "phone": phone_value,
    }
    if NAME_COLUMN.search(column):
        shares["name"] = m(NAME_VALUE)
    exprs = ", ".join(f"avg(CASE WHEN {cond} THEN 1.0 ELSE 0.0 END)" for cond in shares.values())
    measured = con.execute(f"SELECT {exprs} FROM oxiflow_pii").fetchone()
    assert measured is not None
    best = max(zip(shares, measured, strict=True), key=lambda kv: kv[1] or 0)
    return best[0] if (best[1] or 0) >= THRESHOLD else None
