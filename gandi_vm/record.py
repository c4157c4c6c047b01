"""Value records: what `@dataclass(frozen=True)` gave us, without importing dataclasses.

`import dataclasses` costs about 11 ms (it loads inspect, and through it ast, dis, enum,
tokenize...), and each decorated class compiles its methods with exec() at import: more than a
bare interpreter's start, paid by every handler at every boot and hotplug event. Our records need
none of that: fields with defaults, equality, a hash, a readable repr, no assignment after
construction; `replace()` and `asdict()` as dataclasses has them.

    class Mount(Record):
        mountpoint: str
        options: Tuple[str, ...] = ()

The fields are the class's annotations in order (a subclass adds its own after its base's); a
class attribute is the field's default. A list, dict or set default is copied for each instance
(dataclasses' default_factory). Class keywords: `mutable=True` allows assignment (and drops the
hash), for the few records filled in as they go; `uncompared=("name",)` leaves fields out of
equality and the hash (dataclasses' compare=False).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Dict, Tuple, TypeVar

    R = TypeVar("R", bound="Record")

_MISSING = object()


class Record:
    _fields: Tuple[str, ...] = ()
    _defaults: Dict[str, Any] = {}
    _compared: Tuple[str, ...] = ()
    _mutable = False

    def __init_subclass__(cls, mutable: bool = False, uncompared: Tuple[str, ...] = (),
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = list(cls.__dict__.get("__annotations__", {}))
        cls._fields = cls._fields + tuple(name for name in own if name not in cls._fields)
        cls._defaults = {**cls._defaults,
                         **{name: cls.__dict__[name] for name in own if name in cls.__dict__}}
        for name in own:  # a default lives in _defaults, not as a class attribute hiding nothing
            if name in cls.__dict__:
                delattr(cls, name)
        cls._compared = tuple(name for name in cls._fields if name not in uncompared)
        cls._mutable = mutable
        if mutable:
            cls.__hash__ = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} arguments, "
                            f"{len(args)} given")
        values = dict(zip(self._fields, args))
        for name, value in kwargs.items():
            if name not in self._fields or name in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated "
                                f"argument {name!r}")
            values[name] = value
        for name in self._fields:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
                if isinstance(value, (list, dict, set)):
                    value = type(value)(value)
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._mutable:
            raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def _values(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__, self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


def replace(record: R, **changes: Any) -> R:
    """A copy with some fields changed (dataclasses.replace)."""
    return type(record)(**{**{name: getattr(record, name) for name in record._fields}, **changes})


def asdict(record: Record) -> Dict[str, Any]:
    """The fields by name, nested records included (dataclasses.asdict)."""
    return {name: _plain(getattr(record, name)) for name in record._fields}


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
