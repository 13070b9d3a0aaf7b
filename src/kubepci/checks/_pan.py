"""Primary-account-number (PAN) discovery in free text (controls.md DAT-007).

A hit must look like a card number a person or program wrote down, not like any long number:

- 13–19 digits, either contiguous or in the printed layouts 4-4-4-4[-1..3] and 4-6-4/4-6-5
  (Amex/Diners), with one kind of separator (a single space or a dash) used throughout;
- not part of a longer run: no letter or digit directly before or after (hex digests, UUIDs and
  base64 blobs are full of digit runs), no ``+`` before (phone numbers), no decimal point glued
  to a digit (floats), and for a grouped number no further group in the same
  separator (``4111-1111-1111-1111-1111`` is an identifier, not a card);
- passes the Luhn checksum, is not a single repeated digit, and its prefix and length match a
  brand's issuer range (IIN) table.

A consequence of the last bullet of the second rule: a grouped number directly followed by another
group of digits (``4111 1111 1111 1111 12``) is rejected rather than split; contiguous numbers
are unaffected. The detector never returns the number, only a masked form (first six and last four
digits, the display PCI DSS 3.4.1 allows) and offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PanMatch", "brand_of", "find_pans", "luhn_valid", "mask_pan", "mask_text", "may_contain_pan"]

_MIN, _MAX = 13, 19

_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z+])"
    r"(?:\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}(?:(?P=s)\d{1,3})?"
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5}"
    r"|\d{13,19})"
    r"(?![0-9A-Za-z])"
)
# "13 digits, optionally one separator between them" - any candidate contains such a stretch
_PREFILTER = re.compile(r"\d(?:[ -]?\d){12}")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


@dataclass(frozen=True, slots=True)
class PanMatch:
    """One likely card number: brand, masked digits and where it sits in the text."""

    brand: str
    masked: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    """ISO/IEC 7812 check digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i % 2 else d
    return total % 10 == 0


def brand_of(digits: str) -> str | None:
    """Card brand whose issuer range *and* allowed length fit ``digits``, else None."""
    n = len(digits)
    if n < _MIN or n > _MAX or not digits.isdigit():
        return None
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return "Visa" if n in (13, 16, 19) else None
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "Mastercard"
    if p2 in (34, 37) and n == 15:
        return "American Express"
    if (p4 == 6011 or 644 <= p3 <= 649 or p2 == 65) and n >= 16:
        return "Discover"
    if 3528 <= p4 <= 3589 and n >= 16:
        return "JCB"
    if (p2 in (36, 38, 39) or 300 <= p3 <= 305) and n >= 14:
        return "Diners Club"
    if p2 == 62 and n >= 16:
        return "UnionPay"
    if p2 == 50 or 56 <= p2 <= 69:
        return "Maestro"
    return None


def mask_pan(digits: str) -> str:
    """First six and last four digits, every digit between them replaced by ``*``."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def _glued(text: str, start: int, end: int, sep: str | None) -> bool:
    """Is the candidate part of a longer number (a decimal, or one more group in its separator)?

    A comma is deliberately not treated as part of a number: thousands groups have three digits, and
    ``1,4111111111111111`` is far more likely a CSV row than a decimal comma.
    """
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    if len(before) == 2 and before[1] == "." and before[0].isdigit():
        return True
    if len(after) == 2 and after[0] == "." and after[1].isdigit():
        return True
    if sep is not None:
        if len(before) == 2 and before[1] == sep and before[0].isdigit():
            return True
        if len(after) == 2 and after[0] == sep and after[1].isdigit():
            return True
    return False


def may_contain_pan(text: str) -> bool:
    """The prefilter alone: 13 digits with at most single separators between them. Lets a caller
    test many short strings joined by newlines (which never join digit runs) in one call."""
    return len(text) >= _MIN and _PREFILTER.search(text) is not None


def find_pans(text: str) -> list[PanMatch]:
    """All likely PANs in ``text``, in order. Cheap on text without 13 digits in a row."""
    if len(text) < _MIN or _PREFILTER.search(text) is None:
        return []
    out: list[PanMatch] = []
    for m in _CANDIDATE.finditer(text):
        sep = m.group("s") or m.group("t")
        if _glued(text, m.start(), m.end(), sep):
            continue
        digits = m.group(0).replace(sep, "") if sep else m.group(0)
        if digits.count(digits[0]) == len(digits) or not luhn_valid(digits):
            continue
        brand = brand_of(digits)
        if brand is not None:
            out.append(PanMatch(brand, mask_pan(digits), m.start(), m.end()))
    return out


def mask_text(text: str) -> str:
    """``text`` with every likely PAN replaced by its masked form, for echoing names back safely."""
    matches = find_pans(text)
    if not matches:
        return text
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(m.masked)
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)
