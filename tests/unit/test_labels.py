"""labels.component turns a hostile filesystem label into one safe path component."""

from __future__ import annotations

import random
import unicodedata

import pytest

from gandi_vm import labels

FALLBACK = "vdb"


def assert_safe(name: str) -> None:
    assert name, "empty"
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name
    assert "\x00" not in name
    assert not any(unicodedata.category(c)[0] == "C" for c in name), repr(name)
    assert len(name.encode("utf-8")) <= labels.MAX_BYTES


@pytest.mark.parametrize("label, expected", [
    (b"data", "data"),
    (b"../../etc", "etc"),
    (b"a b", "a_b"),
    (b"$(touch /tmp/pwned)", "touch_tmp_pwned"),
    (b".hidden", "hidden"),
    (b"..", FALLBACK),
    (b".", FALLBACK),
    (b"", FALLBACK),
    (None, FALLBACK),
    (b"/", FALLBACK),
    (b"///", FALLBACK),
    (b"\xff\xfe", FALLBACK),
    (b"a\nb", "a_b"),
    (b"a\x00b", "a_b"),
    (b"donn\xc3\xa9es", "donn\u00e9es"),
    ("abc\u202egpj.exe".encode(), "abc_gpj.exe"),
    (b"my-disk_01.v2", "my-disk_01.v2"),
    (b"--x--", "x"),
    # Marks and emoji are kept (they were folded to "_": a Hindi label lost its vowel signs).
    ("\U0001f4be".encode(), "\U0001f4be"),
    ("\u2764\ufe0f".encode(), "\u2764\ufe0f"),
    ("\u0939\u093f\u0928\u094d\u0926\u0940".encode(), "\u0939\u093f\u0928\u094d\u0926\u0940"),
    ("Donne\u0301es".encode(), "Donne\u0301es"),  # decomposed (NFD) accent
    ("a\u200db".encode(), "a_b"),  # format characters are invisible: folded
])
def test_component(label, expected):
    result = labels.component(label, FALLBACK)
    assert result == expected
    assert_safe(result)


def test_long_labels_are_bounded():
    assert labels.component(b"x" * 255, FALLBACK) == "x" * labels.MAX_BYTES
    assert labels.component(b"x" * 300, FALLBACK) == "x" * labels.MAX_BYTES


def test_multibyte_label_is_cut_on_a_character_boundary():
    name = labels.component("\u00e9".encode() * 100, FALLBACK)  # 2 UTF-8 bytes each
    assert name == "\u00e9" * (labels.MAX_BYTES // 2)
    assert_safe(name)


def test_truncation_does_not_leave_trailing_punctuation():
    name = labels.component(b"a" * (labels.MAX_BYTES - 1) + b".b", FALLBACK)
    assert name == "a" * (labels.MAX_BYTES - 1)


def test_rtl_override_is_removed():
    name = labels.component("\u202eexe.txt".encode(), FALLBACK)
    assert "\u202e" not in name
    assert name == "exe.txt"


def test_properties_over_random_bytes():
    rng = random.Random(0)
    alphabet = b"./\x00\n\t $`-_aZ9" + "é\u202e\u200b".encode()
    for _ in range(5000):
        length = rng.randint(0, 300)
        if rng.random() < 0.5:
            raw = bytes(rng.getrandbits(8) for _ in range(length))
        else:
            raw = bytes(rng.choice(alphabet) for _ in range(length))
        name = labels.component(raw, FALLBACK)
        assert_safe(name)


def test_choose_takes_the_first_free_name():
    taken = {"/srv/data", "/srv/data_2"}
    assert labels.choose("/srv", "data", lambda p: "taken" if p in taken else None) == "/srv/data_3"
    assert labels.choose("/srv", "data", lambda p: None) == "/srv/data"
    assert labels.choose("/srv", "data", lambda p: "taken" if p == "/srv/data" else None) \
        == "/srv/data_2"


def test_choose_gives_up_when_everything_is_taken():
    asked = []

    def unusable(path):
        asked.append(path)
        return "taken"

    assert labels.choose("/srv", "data", unusable, limit=5) is None
    assert asked == ["/srv/data", "/srv/data_2", "/srv/data_3", "/srv/data_4", "/srv/data_5"]
