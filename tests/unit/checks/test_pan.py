"""The PAN detector: brands, checksum, lengths, layouts, false-positive traps and masking.

Every card number here is a published test number (payment-processor sandbox documentation) or is
built from a brand prefix plus a computed Luhn digit; none is a real account.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepci.checks._pan import brand_of, find_pans, luhn_valid, mask_pan, mask_text

TEST_CARDS = [
    ("4111111111111111", "Visa"),
    ("4012888888881881", "Visa"),
    ("4222222222222", "Visa"),
    ("5555555555554444", "Mastercard"),
    ("5105105105105100", "Mastercard"),
    ("2223003122003222", "Mastercard"),
    ("378282246310005", "American Express"),
    ("371449635398431", "American Express"),
    ("6011111111111117", "Discover"),
    ("6011000990139424", "Discover"),
    ("3530111333300000", "JCB"),
    ("3566002020360505", "JCB"),
    ("30569309025904", "Diners Club"),
    ("38520000023237", "Diners Club"),
    ("36227206271667", "Diners Club"),
    ("6200000000000005", "UnionPay"),
    ("6759649826438453", "Maestro"),
    ("5018000000000009", "Maestro"),
]


def with_check_digit(body: str) -> str:
    """Append the Luhn digit that makes ``body`` valid."""
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


def only(text: str) -> str:
    matches = find_pans(text)
    assert len(matches) == 1, matches
    return matches[0].masked


@pytest.mark.parametrize(("pan", "brand"), TEST_CARDS)
def test_published_test_cards_are_found_with_their_brand(pan: str, brand: str) -> None:
    matches = find_pans(f"card: {pan} (test)")
    assert [(m.brand, m.masked) for m in matches] == [(brand, mask_pan(pan))]
    assert matches[0].start == len("card: ")
    assert matches[0].end == len("card: ") + len(pan)


@pytest.mark.parametrize(("pan", "brand"), TEST_CARDS)
def test_a_wrong_check_digit_is_not_a_pan(pan: str, brand: str) -> None:
    broken = pan[:-1] + str((int(pan[-1]) + 1) % 10)
    assert not luhn_valid(broken)
    assert find_pans(f"card: {broken}") == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("41111111111111", "Visa is 13, 16 or 19 digits, not 15"),
        ("5555555555554444", "Mastercard is exactly 16 digits, not 17"),
        ("378282246310005", "American Express is exactly 15 digits, not 16"),
        ("3782822463100", "American Express is exactly 15 digits, not 14"),
        ("361111111111", "Diners Club needs at least 14 digits, not 13"),
        ("3530111333300", "JCB needs 16 to 19 digits, not 14"),
        ("411111111111111111111", "more than 19 digits is no PAN"),
        ("123456789012", "13-digit number without a card prefix"),
        ("700000000000000", "prefix 7 belongs to no card brand"),
    ],
)
def test_lengths_and_prefixes_outside_the_brand_table_are_ignored(body: str, why: str) -> None:
    number = with_check_digit(body)
    assert find_pans(f"id {number} end") == [], why


def test_luhn_on_known_vectors() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_valid("4111111111111111")


def test_brand_of_requires_digits_and_length() -> None:
    assert brand_of("4111111111111111") == "Visa"
    assert brand_of("4111-1111-1111-1111") is None
    assert brand_of("411111111111") is None
    assert brand_of("5555555555554444") == "Mastercard"
    assert brand_of(with_check_digit("272099999999999")) == "Mastercard"
    assert brand_of(with_check_digit("272199999999999")) is None  # just past the 2-series range
    assert brand_of(with_check_digit("222099999999999")) is None  # just below it


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "pan=4111 1111 1111 1111;",
        "\"4111-1111-1111-1111\"",
        "3782 822463 10005",
        "3782-822463-10005",
        "3056 930902 5904",
        "6205 5000 0000 0000 004",
    ],
)
def test_printed_layouts_with_spaces_or_dashes_are_found(text: str) -> None:
    assert len(find_pans(text)) == 1


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111-1111 1111",  # mixed separators
        "4111  1111  1111  1111",  # double spaces
        "41 11 11 11 11 11 11 11",  # groups of two
        "411 111 111 111 1111",  # groups of three
        "4111.1111.1111.1111",  # dots are not a card layout
        "4111_1111_1111_1111",
    ],
)
def test_other_layouts_are_not_card_numbers(text: str) -> None:
    assert find_pans(text) == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0004111111111111111", "a valid PAN inside a longer digit run"),
        ("41111111111111114111111111111111", "two PANs glued together are one 32-digit number"),
        ("ts=1712345678901", "a millisecond epoch timestamp"),
        ("ts=1712345678901234567", "a nanosecond epoch timestamp"),
        ("20240101120000123456", "a compact date-time with fraction"),
        ("call +4111111111111111", "an E.164 phone number"),
        ("tel: +49 1511 2345678", "a formatted phone number"),
        ("price 0.4111111111111111", "the fraction of a decimal number"),
        ("4111111111111111.5", "the integer part of a decimal number"),
        ("41111111-1111-1111-1111-111111111111", "a UUID made of digits"),
        ("4111-1111-1111-1111-1111", "five groups of four are an identifier"),
        ("12 4111 1111 1111 1111", "a leading group in the same separator"),
        ("4111 1111 1111 1111 12", "a trailing group in the same separator"),
        ("sha256:af4111111111111111be00d1", "digits inside a hex digest"),
        ("checksum/config: 4111111111111111abcdef", "a hex checksum starting with digits"),
        ("abc4111111111111111", "glued to letters"),
        ("0000000000000000", "all zeros pass Luhn but are no PAN"),
        ("4444444444444444 8888888888888888", "a single repeated digit"),
    ],
)
def test_longer_numbers_and_lookalikes_do_not_match(text: str, why: str) -> None:
    assert find_pans(text) == [], why


def test_csv_rows_are_scanned() -> None:
    assert [m.masked for m in find_pans("id,pan\n1,378282246310005\n2,4111111111111111")] == [
        "378282*****0005", "411111******1111"]


def test_several_pans_in_one_text_are_all_reported_in_order() -> None:
    text = "a=4111111111111111, b=5555 5555 5555 4444\nc: 378282246310005"
    assert [m.masked for m in find_pans(text)] == ["411111******1111", "555555******4444", "378282*****0005"]


def test_masking_keeps_first_six_and_last_four_only() -> None:
    assert mask_pan("4111111111111111") == "411111******1111"
    assert mask_pan("4222222222222") == "422222***2222"
    assert mask_pan("6205500000000000004") == "620550*********0004"
    for pan, _ in TEST_CARDS:
        masked = mask_pan(pan)
        assert len(masked) == len(pan)
        assert masked[6:-4] == "*" * (len(pan) - 10)
        assert pan not in masked


def test_mask_text_replaces_only_the_pans() -> None:
    assert mask_text("a 4111 1111 1111 1111 b 378282246310005 c") == "a 411111******1111 b 378282*****0005 c"
    assert mask_text("no card here 12345") == "no card here 12345"


def test_short_text_is_rejected_without_scanning() -> None:
    assert find_pans("") == []
    assert find_pans("411111111111") == []


_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "644", "65", "3528", "3589", "36", "300",
             "38", "62", "50", "67"]
_LENGTHS = {"4": (13, 16, 19), "34": (15,), "37": (15,), "51": (16,), "55": (16,), "2221": (16,),
            "2720": (16,)}


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(_PREFIXES))
    length = draw(st.sampled_from(_LENGTHS.get(prefix, (16, 17, 18, 19))))
    body = prefix + draw(st.text("0123456789", min_size=length - len(prefix) - 1,
                                 max_size=length - len(prefix) - 1))
    return with_check_digit(body)


@given(card_numbers(), st.sampled_from(["", " ", "card ", "x=", "\"", "\n"]),
       st.sampled_from(["", " ", ".", "\"", ";", " exp"]))
def test_property_masked_output_never_contains_the_number(pan: str, before: str, after: str) -> None:
    matches = find_pans(before + pan + after)
    if pan.count(pan[0]) == len(pan):
        assert matches == []
        return
    assert len(matches) == 1
    masked = matches[0].masked
    assert pan not in masked
    assert masked[:6] == pan[:6]
    assert masked[-4:] == pan[-4:]
    assert set(masked[6:-4]) == {"*"}
    assert sum(ch.isdigit() for ch in masked) == 10


@given(st.text(alphabet="0123456789 -+.,abcdef:=\n", max_size=200))
def test_property_matches_never_expose_more_than_ten_digits(text: str) -> None:
    for m in find_pans(text):
        assert sum(ch.isdigit() for ch in m.masked) == 10
        assert text[m.start : m.end] not in m.masked
        assert luhn_valid("".join(ch for ch in text[m.start : m.end] if ch.isdigit()))
