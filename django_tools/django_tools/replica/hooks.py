"""A replica model's own django-cqrs hooks: which ones it uses (so which way `apply` writes it),
the failure of a hook that refused, the retry hooks it overrides (which `failures.classify`
asks), and the flag that tells the model's `cqrs` manager it is being called from inside
`apply`.

The core (`apply`, `write`) calls a model's hooks; their default implementations call back into
the model's `cqrs` manager. That manager depends on the core, never the other way: the core
only sets `inside_apply(model)` and checks `is_convergent(model)`, and the manager reads
`applying(model)`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import models


class HookFailed(RuntimeError):
    """A replica model's `cqrs_save` / `cqrs_delete` returned a falsy value: not applied. A
    transient failure, as in django-cqrs's consumer (its `should_retry_cqrs`): the model may
    refuse now and accept later (a row it depends on has not arrived yet)."""


_HOOK_SIGNALS = (
    models.signals.pre_save,
    models.signals.post_save,
    models.signals.pre_delete,
    models.signals.post_delete,
)
_HOOKS: dict[type[models.Model], tuple[str, ...]] = {}


def hooks_of(model: type[models.Model]) -> tuple[str, ...]:
    """The django-cqrs replica hooks `model` uses (empty: it is written in bulk). Worked out
    once per process, at the model's first change: connect signal receivers in
    `AppConfig.ready()`, as Django recommends (`forget_hooks()` makes it look again)."""
    found = _HOOKS.get(model)
    if found is None:
        hooks = []
        ReplicaMixin = _stock_mixins().ReplicaMixin
        if getattr(model, "CQRS_MAPPING", None) is not None:
            hooks.append("CQRS_MAPPING")
        if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
            hooks.append("CQRS_CUSTOM_SERIALIZATION")
        for name in ("cqrs_save", "cqrs_create", "cqrs_delete"):
            if getattr(model, name).__func__ is not getattr(ReplicaMixin, name).__func__:
                hooks.append(name)
        if model.cqrs_update is not ReplicaMixin.cqrs_update:
            hooks.append("cqrs_update")
        hooks += [
            f"{signal_name(signal)} receiver"
            for signal in _HOOK_SIGNALS
            if signal.has_listeners(model)
        ]
        found = _HOOKS[model] = tuple(hooks)
    return found


def _stock_mixins():
    # dj_cqrs.mixins reads Django's settings when it is imported (its transport): looked up at
    # the first model seen, so that the failure classification importing this module needs no
    # settings (the broker-permission check imports the replica's names without a project).
    from dj_cqrs import mixins

    return mixins


def forget_hooks() -> None:
    _HOOKS.clear()
    _RETRY_HOOKS.clear()


# --- django-cqrs's retry hooks: asked by `failures.classify` ------------------------------


@dataclass(frozen=True)
class RetryHooks:
    """The retry hooks a replica model overrides (None: django-cqrs's own, which this
    replica's policy stands for): `should_retry_cqrs(current_retry, exception)` and
    `get_cqrs_retry_delay(current_retry)`, called as django-cqrs's consumer calls them, on
    the class."""

    should_retry: Callable[[int, BaseException], bool] | None = None
    retry_delay: Callable[[int], float] | None = None


NO_RETRY_HOOKS = RetryHooks()
_RETRY_HOOKS: dict[type[models.Model], RetryHooks] = {}


def retry_hooks(model: type[models.Model] | None) -> RetryHooks:
    """The retry hooks `model` overrides, worked out once per model (a dictionary lookup per
    failure after that): django-cqrs's defaults read CQRS_MAX_RETRIES and CQRS_RETRY_DELAY,
    which this replica's policy already honours, so only an override changes anything."""
    if model is None:
        return NO_RETRY_HOOKS
    found = _RETRY_HOOKS.get(model)
    if found is None:
        found = _RETRY_HOOKS[model] = RetryHooks(
            should_retry=_overridden(model, "should_retry_cqrs"),
            retry_delay=_overridden(model, "get_cqrs_retry_delay"),
        )
    return found


def _overridden(model: type[models.Model], name: str) -> Callable | None:
    # Static methods in django-cqrs: the class attribute is the very function unless a model
    # defines its own (a static method, a class method, anything callable on the class).
    hook = getattr(model, name, None)
    if hook is None or hook is getattr(_stock_mixins().RawReplicaMixin, name):
        return None
    return hook


def signal_name(signal) -> str:
    names = {id(s): n for n, s in vars(models.signals).items() if isinstance(s, type(signal))}
    return names.get(id(signal), "signal")


# --- the model's `cqrs` manager, seen from the core ---------------------------------------

#: Set on a `cqrs` manager class that obeys `applying()`: inside an apply it writes the row
#: itself, elsewhere it routes django-cqrs's entry points to `apply`. A stock `ReplicaManager`
#: would write on its own, past revisions and tombstones.
CONVERGENT = "routes_to_replica_apply"


def is_convergent(model: type[models.Model]) -> bool:
    return bool(getattr(getattr(model, "cqrs", None), CONVERGENT, False))


# A context variable, not a thread-local: it follows the code that set it, and a hook that
# runs in another thread or task never inherits it by accident.
_inside: contextvars.ContextVar[type[models.Model] | None] = contextvars.ContextVar(
    "django_tools_replica_inside_apply", default=None
)


@contextlib.contextmanager
def inside_apply(model: type[models.Model]) -> Iterator[None]:
    """While `apply` calls a model's own hooks: the manager then writes (the hooks' default
    implementations call back into it) instead of starting another apply."""
    token = _inside.set(model)
    try:
        yield
    finally:
        _inside.reset(token)


def applying(model: type[models.Model]) -> bool:
    """Whether `apply` is calling `model`'s own hooks in this context."""
    return _inside.get() is model
