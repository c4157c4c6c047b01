"""gandi_vm.record: what the code relied on from frozen dataclasses."""

from __future__ import annotations

from typing import List, Optional, Tuple

import pytest

from gandi_vm.record import Record, asdict, replace


class Point(Record):
    x: int
    y: int = 0
    tags: Tuple[str, ...] = ()


class Noted(Record, uncompared=("notes",)):
    value: int
    notes: Tuple[str, ...] = ()


class Bag(Record, mutable=True):
    name: str
    items: List[str] = []
    inner: Optional[Point] = None


def test_fields_in_order_with_defaults_by_position_or_name():
    assert Point(1) == Point(x=1, y=0, tags=()) == Point(1, 0)
    assert repr(Point(1, 2, ("a",))) == "Point(x=1, y=2, tags=('a',))"
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, x=1)
    with pytest.raises(TypeError):
        Point(1, 2, (), 4)


def test_frozen_equal_and_hashable_by_value_and_class():
    point = Point(1, 2)
    with pytest.raises(AttributeError):
        point.x = 3
    assert {Point(1, 2), Point(1, 2)} == {point}
    assert Point(1, 2) != Noted(1) and Point(1, 2) != (1, 2, ())


def test_uncompared_fields_are_kept_but_not_compared():
    assert Noted(1, ("a",)) == Noted(1) and hash(Noted(1, ("a",))) == hash(Noted(1))
    assert Noted(1, ("a",)).notes == ("a",)


def test_replace_and_asdict():
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    with pytest.raises(TypeError):
        replace(Point(1), z=1)
    assert asdict(Bag("b", ["i"], Point(1))) == {"name": "b", "items": ["i"],
                                                 "inner": {"x": 1, "y": 0, "tags": ()}}


def test_a_mutable_record_gets_its_own_copy_of_a_list_default_and_no_hash():
    first, second = Bag("a"), Bag("b")
    first.items.append("x")
    first.name = "c"
    assert (first.name, first.items, second.items) == ("c", ["x"], [])
    with pytest.raises(TypeError):
        hash(first)
