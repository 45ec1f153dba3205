"""One object for equal parts of a validated config: what a check holds, checks by the thousand hold alike.

Why: pydantic builds every nested model anew for each check (a ``retry:`` or ``expect:`` left at its
default is a fresh ``RetryConfig`` / ``Expectation`` per check) and gives every model its own set of the
field names it was given (``__pydantic_fields_set__``: 216 bytes for an empty set, 728 for five names).
Those were 1.7 kB of the 2.4 kB a plain HTTP check's config took (tracemalloc; bench/memory.py), 85 MB
at 50,000 checks. As each integration is validated, equal frozen sub-models of its checks become the
instance met first in the config, and equal field-name sets of frozen models one set.

Safe because the models are frozen (nothing assigns their fields, so nothing adds to a shared names
set; ``model_copy`` copies the set before it updates it), a sub-model is shared only with one of the
same class, equal values of the same types and the same fields given (``model_fields_set`` and dumps
with ``exclude_unset`` stay as they were), and values derived and cached on a model
(``RetryConfig.policy``, ``Expectation.compiled_json``) depend on its fields only. A sub-model holding
a non-empty list or mapping, or private attributes, is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

_EMPTY = ("empty",)  # an empty dict or list, in a key: equal to any other empty one of the same type


class PartSharer:
    """Remembers the first of each kind of equal part; hands it out for the ones after."""

    __slots__ = ("_models", "_names")

    def __init__(self) -> None:
        self._models: dict[Hashable, BaseModel] = {}
        self._names: dict[frozenset[str], set[str]] = {}

    def share(self, model: BaseModel) -> None:
        """Replace ``model``'s frozen sub-models by equal ones met before and share its names set (in place:
        ``model`` itself stays; a check is never replaced, only what it holds)."""
        fields = model.__dict__
        for name in type(model).model_fields:
            value = fields.get(name)
            if isinstance(value, BaseModel) and _frozen(value):
                self.share(value)
                key = _key(value)
                if key is not None:
                    fields[name] = self._models.setdefault(key, value)
        if _frozen(model):
            given = model.__pydantic_fields_set__
            shared = self._names.setdefault(frozenset(given), given)
            if shared is not given:
                object.__setattr__(model, "__pydantic_fields_set__", shared)


_LOADING: ContextVar[PartSharer | None] = ContextVar("config_part_sharer", default=None)


@contextlib.contextmanager
def sharing_parts() -> Iterator[None]:
    """While a config is validated: ``share_equal_parts`` shares across the whole config."""
    token = _LOADING.set(PartSharer())
    try:
        yield
    finally:
        _LOADING.reset(token)


def share_equal_parts(models: Iterable[BaseModel]) -> None:
    """``PartSharer.share`` over ``models`` (an integration's checks, as soon as they are validated: the
    duplicates are freed before the next integration is built, so a big config's load peaks lower),
    with the parts of the config being loaded (``sharing_parts``); outside a load, nothing."""
    sharer = _LOADING.get()
    if sharer is not None:
        for model in models:
            sharer.share(model)


def _frozen(model: BaseModel) -> bool:
    return bool(model.model_config.get("frozen"))


def _key(model: BaseModel) -> Hashable | None:
    """What makes two sub-models interchangeable: class, the fields given, each field's type and value.
    None: not shareable (a non-empty container, private attributes, an unhashable value)."""
    if model.__pydantic_private__ or model.__pydantic_extra__:
        return None
    fields = model.__dict__
    parts: list[Any] = [type(model), frozenset(model.__pydantic_fields_set__)]
    for name in type(model).model_fields:
        value = fields.get(name)
        if isinstance(value, dict | list):
            if value:
                return None
            parts.append((name, type(value), _EMPTY))
        elif isinstance(value, BaseModel):
            parts.append((name, id(value)))  # already shared: equal sub-models are the same object
        elif isinstance(value, float):
            parts.append((name, float, repr(value)))  # 0.0 and -0.0 are equal, not the same value
        else:
            parts.append((name, type(value), value))
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key
