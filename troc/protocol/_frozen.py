"""A cheaper ``__init__`` for the frozen, slotted dataclasses built per entry.

The ``__init__`` that :mod:`dataclasses` writes for a frozen class sets each
field with ``object.__setattr__(self, name, value)``: a global lookup, an
attribute lookup, and a search of the class for ``name``, for every field of
every object. Ingesting one entry builds about eight such objects (the entry,
its body and references, its ``Stored``, reference row, head and outcome),
and their construction was ~8 µs of it (bench/ingest.py, one core). In a
slotted class each field is a slot whose descriptor sets it directly;
:func:`fast_init` writes the same ``__init__`` (same parameters, defaults and
result, still frozen) with those setters, about twice as fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

_T = TypeVar("_T")


def fast_init(cls: type[_T]) -> type[_T]:
    """Give the frozen, slotted dataclass ``cls`` an ``__init__`` that sets its
    slots through their descriptors. Apply after ``@dataclass``; only for
    plain fields (no ``default_factory``, ``__post_init__``, keyword-only or
    ``init=False`` fields), which is checked."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    namespace: dict[str, Any] = {}
    args: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} is not a plain field")
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    source = f"def __init__(self, {', '.join(args)}):\n" + ("".join(body) or "    pass\n")
    exec(source, namespace)  # the source is built above from field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
