"""A public hook on the plugin's modules: what each call of an attention module computed over, what beam search
moved in its cache, and when the model's encoder and decoder run.

``observe(module, observer)`` makes an attention module report, after every call, a :class:`CallShape` to
``observer.call(module, shape)``, and after every reorder of its cache the elements moved to
``observer.reorder(module, elements)``; the model's encoder and decoder call ``observer.enter(module)`` and
``observer.exit(module)`` around each forward (:func:`region`). The energy accounting counts decoding with it,
without reading a cache's entries or patching a method. Modules with no observer pay one dictionary lookup per
call.
"""
import contextlib
import weakref
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CallShape:
    rows: int  # sequences the keys belong to: source sentences when a sentence's hypotheses share them
    queries: int  # queries per row (a sentence's hypotheses are stacked as extra queries)
    keys: Optional[int]  # keys per row; None for a fixed-size state that keeps no keys (Performer's decoding)
    new_keys: Optional[int]  # keys computed by this call; None for a full pass without a cache


_OBSERVERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Handle:
    def __init__(self, module, observer):
        self.module, self.observer = module, observer

    def remove(self):
        watching = _OBSERVERS.get(self.module, [])
        if self.observer in watching:
            watching.remove(self.observer)
        if not watching:
            _OBSERVERS.pop(self.module, None)


def observe(module, observer) -> _Handle:
    """Report ``module``'s calls and reorders to ``observer`` until the returned handle's ``remove()``."""
    _OBSERVERS.setdefault(module, []).append(observer)
    return _Handle(module, observer)


def report_call(module, rows: int, queries: int, keys: Optional[int], new_keys: Optional[int]):
    watching = _OBSERVERS.get(module)
    if watching:
        shape = CallShape(rows, queries, keys, new_keys)
        for observer in list(watching):
            observer.call(module, shape)


def report_reorder(module, elements: int):
    watching = _OBSERVERS.get(module)
    if watching:
        for observer in list(watching):
            observer.reorder(module, elements)


@contextlib.contextmanager
def region(module):
    """Around a forward of ``module`` (the model's encoder or decoder): its observers' ``enter`` and ``exit``."""
    watching = list(_OBSERVERS.get(module, ()))
    for observer in watching:
        observer.enter(module)
    try:
        yield
    finally:
        for observer in watching:
            observer.exit(module)
