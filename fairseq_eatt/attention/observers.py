"""A public hook on attention modules: the shape of each call and what beam search moved in its cache.

``observe(module, observer)`` makes the module report, after every call, a :class:`CallShape` to
``observer.call(module, shape)``, and after every reorder of its cache the elements moved to
``observer.reorder(module, elements)``. The energy accounting counts decoding with it, without reading a cache's
entries or patching a method. Modules with no observer pay one dictionary lookup per call.
"""
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
