"""The one table of degradation tasks: name → factory. Each task module registers itself."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import SiloError
from ..resize import DEFAULT_RESIZER

_FACTORIES: dict[str, Callable] = {}
_TAKES_RESIZER: set[str] = set()  # the tasks whose factory has a ``resizer`` parameter


def register(name: str):
    """Class or factory decorator: ``@register("gb")``. A factory called with no argument
    gives the task's default instance; one with a ``resizer`` parameter (the SR tasks) is
    given the resizer :func:`get_degradation` was asked for."""
    def add(factory):
        if name in _FACTORIES:
            raise ValueError(f"degradation {name!r} registered twice")
        _FACTORIES[name] = factory
        if "resizer" in inspect.signature(factory).parameters:
            _TAKES_RESIZER.add(name)
        return factory
    return add


def task_names() -> tuple[str, ...]:
    """Every registered task name, in registration order."""
    return tuple(_FACTORIES)


def get_degradation(name: str, resizer: str = DEFAULT_RESIZER):
    """The :class:`~.base.Degradation` called ``name`` (``resizer``: the SR measurement model,
    ignored by the other tasks), or a :class:`SiloError` naming the choices."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise SiloError(f"unknown task {name!r}; choose one of: {', '.join(_FACTORIES)}") \
            from None
    return factory(resizer=resizer) if name in _TAKES_RESIZER else factory()


def all_degradations() -> list:
    """One instance of every registered task (default resizer)."""
    return [get_degradation(name) for name in _FACTORIES]


def imposable_tasks() -> tuple[str, ...]:
    """The tasks ``restore --keep-measured`` supports."""
    return tuple(d.name for d in all_degradations() if d.imposable)
