"""The sandbox for marketer-written templates: no way out, and no way to exhaust the worker.

Jinja2's ``ImmutableSandboxedEnvironment`` refuses access to Python internals and caps
``range()``, but it does not bound time or memory: ``{{ "x" * 10**10 }}``,
``{{ 9 ** 9999999 }}``, ``{{ "x"|center(10**10) }}`` or three nested loops would take the
worker (or, at save time, the web process) down. This module adds:

- **size limits** on the operations that build big values in one step: ``*``, ``**`` and
  ``%`` between values, and every filter and method call (integer arguments are capped,
  format widths too, ``replace`` is sized before it runs, and no result may be larger than
  a message may be);
- a **time budget** per render: a watchdog thread raises :class:`RenderTimeout` inside a
  render that runs too long (loops are Python code, so the exception lands at the next
  instruction).
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Largest value (characters, or the characters a list holds) a template may build: what
#: a message may hold.
MAX_SIZE = 2_000_000
#: Largest number a filter or method call may get (widths, counts, ranges).
MAX_ARGUMENT = 100_000
#: Largest integer a template may compute, in bits.
MAX_BITS = 4096
#: Seconds one render may take; a message normally renders in well under a millisecond.
RENDER_SECONDS = 1.0

_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d{6,}|\{)[^{}]*\}")
_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")


class RenderTimeout(Exception):
    """A render ran longer than its time budget."""


def _refuse(message: str) -> SecurityError:
    return SecurityError(f"{message} (templates are limited in size and time)")


def weight(value: Any) -> int:
    """Characters a value stands for once rendered (a list: those of its items)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(v) if isinstance(v, str | bytes) else 8 for v in value)
    return 8


def _check_size(value: Any) -> Any:
    if weight(value) > MAX_SIZE:
        raise _refuse("the value is too large")
    return value


def _check_argument(value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_ARGUMENT:
        raise _refuse(f"the number {value} is too large for a template function")


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and (_FORMAT_WIDTH.search(fmt) or _PERCENT_WIDTH.search(fmt)):
        raise _refuse("format widths are limited")


def _expect(size: int) -> None:
    if size > MAX_SIZE:
        raise _refuse("the result would be too large")


def _precheck(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Size what a string operation would build before it builds it."""
    for value in (*args, *kwargs.values()):
        _check_argument(value)
    text = subject if isinstance(subject, str) else None
    if name in ("format", "format_map"):
        _check_format(subject)
    elif name == "replace" and text is not None and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = text.count(old) if old else len(text) + 1
        _expect(len(text) + hits * max(0, len(new) - len(old)))
    elif name == "indent" and text is not None:
        width = args[0] if args else kwargs.get("width", 4)
        _expect(len(text) + (text.count("\n") + 1) * (len(width) if isinstance(width, str) else int(width)))
    elif name == "wordwrap" and text is not None:
        width = int(args[0] if args else kwargs.get("width", 79))
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        _expect(len(text) + (len(text) // max(width, 1) + 1) * len(str(wrap)))
    elif name == "expandtabs" and text is not None:
        size = int(args[0] if args else kwargs.get("tabsize", 8))
        _expect(len(text) + text.count("\t") * size)
    elif name == "join":
        items, separator = (args[0] if args else None, subject) if text is not None else (subject, None)
        if separator is None:
            separator = args[0] if args else kwargs.get("d", "")
        if isinstance(items, list | tuple):
            _expect(weight(items) + max(0, len(items) - 1) * len(str(separator)))


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)  # keeps the pass_context / pass_eval_context marker Jinja reads
    def guarded(*args: Any, **kwargs: Any) -> Any:
        plain = tuple(a for a in args if not isinstance(a, Context | EvalContext | Environment))
        if plain:
            _precheck(name, plain[0], plain[1:], kwargs)
        return _check_size(func(*args, **kwargs))

    return guarded


def bounded_pieces(pieces: Iterable[str]) -> list[str]:
    """A template's output pieces, collected as they are produced and stopping once they
    are too large (instead of holding all of it first)."""
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_SIZE:
            raise _refuse("the rendered text is too large")
        out.append(piece)
    return out


def _bounded_concat(pieces: Iterable[str]) -> str:
    return "".join(bounded_pieces(pieces))


class _GuardedCodeGenerator(CodeGenerator):
    """``a ~ b`` is sized before it is joined."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja's name
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.sized((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with limits on everything that can grow."""

    intercepted_binops = frozenset({"*", "**", "%"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guard_filter(name, func) for name, func in self.filters.items()}
        self.concat = _bounded_concat  # type: ignore[method-assign]

    @staticmethod
    def sized(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _expect(sum(weight(p) if isinstance(p, str | list | tuple) else 8 for p in parts))
        return parts

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple | bytes) and type(times) is int:
                    _expect(weight(seq) * times)
            if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > MAX_BITS:
                raise _refuse("the number is too large")
        elif operator == "**":
            big = type(left) is int and type(right) is int and right > 0
            if big and left.bit_length() * right > MAX_BITS:
                raise _refuse("the number is too large")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # The sandbox hands out str.format wrapped; the method itself is ``__wrapped__``.
        method = getattr(__obj, "__wrapped__", __obj)
        _precheck(getattr(method, "__name__", ""), getattr(method, "__self__", None), args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


# ----------------------------------------------------------------------------- time
_lock = threading.Lock()
#: thread id -> (deadline, registration)
_deadlines: dict[int, tuple[float, object]] = {}
#: Threads the watchdog has raised RenderTimeout in (the exception may still be pending).
_fired: set[int] = set()
_watchdog: threading.Thread | None = None


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``ident`` at its next instruction (None: take it back)."""
    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), target)


def _watch() -> None:
    while True:
        time.sleep(0.02)
        if not _deadlines:
            continue
        now = time.monotonic()
        with _lock:
            for ident, (deadline, _registration) in list(_deadlines.items()):
                if now >= deadline:
                    del _deadlines[ident]
                    _fired.add(ident)
                    _set_async_exc(ident, RenderTimeout)


def _ensure_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        with _lock:
            if _watchdog is None or not _watchdog.is_alive():
                _watchdog = threading.Thread(target=_watch, name="template-watchdog", daemon=True)
                _watchdog.start()


@contextmanager
def time_budget(seconds: float = RENDER_SECONDS) -> Iterator[None]:
    """Raise :class:`RenderTimeout` inside the block if it runs longer than ``seconds``.
    Meant for pure-Python work (template code); a single long C call finishes first."""
    _ensure_watchdog()
    ident = threading.get_ident()
    registration = object()
    with _lock:
        _deadlines[ident] = (time.monotonic() + seconds, registration)
    try:
        yield
    finally:
        with _lock:
            current = _deadlines.get(ident)
            if current is not None and current[1] is registration:
                del _deadlines[ident]
            if ident in _fired:
                # The render ended just as the watchdog fired: take back the pending
                # exception so that it cannot surface in unrelated code after the block.
                _fired.discard(ident)
                _set_async_exc(ident, None)
