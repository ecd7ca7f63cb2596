"""Every public callable says what it does and documents each of its parameters.

`help(gc.compile)` is the first thing a user reads; a keyword added without a word in the
docstring fails here. "Public" is what graphc/__init__.py exports, what gc.nn, gc.optim,
gc.init and gc.onnx define (or list in __all__), and the public methods of Executable and
Tensor. A parameter counts as documented when its name appears as a word in the docstring
(of the class or its __init__, for classes). Exception classes need a docstring only: users
catch them, graphc constructs them.
"""
from __future__ import annotations

import inspect
import re

import graphc as gc
import pytest

MODULES = {"gc": gc, "gc.nn": gc.nn, "gc.optim": gc.optim, "gc.init": gc.init, "gc.onnx": gc.onnx}


def _exported(prefix: str, module) -> list[tuple[str, object]]:
    """(qualified name, object) for each public callable of a module."""
    if prefix != "gc" and hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for n in names:
        obj = getattr(module, n)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        home = getattr(obj, "__module__", "") or ""
        if prefix != "gc" and not home.startswith(module.__name__) and n not in getattr(module, "__all__", ()):
            continue  # imported helpers (as_bool, capture_loc, typing names), not the module's API
        if not home.startswith("graphc"):
            continue
        out.append((f"{prefix}.{n}", obj))
    return out


def _methods(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties a class defines itself (and __call__)."""
    out = []
    for n, attr in vars(cls).items():
        if n.startswith("_") and n != "__call__":
            continue
        fn = attr.fget if isinstance(attr, property) else attr
        if callable(fn):
            out.append((f"gc.{cls.__name__}.{n}", fn))
    return out


def public_callables() -> list[tuple[str, object]]:
    found = [item for prefix, mod in MODULES.items() for item in _exported(prefix, mod)]
    found += _methods(gc.Executable) + _methods(gc.Tensor)
    return sorted(dict(found).items())


def _undocumented(obj: object) -> list[str]:
    """The parameter names of obj that its docstring does not mention."""
    doc = inspect.getdoc(obj) or ""
    target = obj
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return []
        init = vars(obj).get("__init__")
        doc += "\n" + ((init.__doc__ or "") if init is not None else "")
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    names = [p.name for p in sig.parameters.values()
             if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return [n for n in names if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", doc)]


ITEMS = public_callables()


def test_the_public_surface_is_found():
    names = {n for n, _ in ITEMS}
    # the collector must see the entry points a user meets first, or the test checks nothing
    for must in ("gc.compile", "gc.jit", "gc.export", "gc.load", "gc.relu", "gc.softmax",
                 "gc.nn.Linear", "gc.optim.Adam", "gc.init.normal", "gc.onnx.load",
                 "gc.Executable.__call__", "gc.Tensor.sum", "gc.GraphcError"):
        assert must in names, must
    assert len(ITEMS) > 120


@pytest.mark.parametrize("name,obj", ITEMS, ids=[n for n, _ in ITEMS])
def test_has_a_docstring_naming_every_parameter(name, obj):
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"
    missing = _undocumented(obj)
    assert not missing, f"{name}: the docstring does not mention parameter(s) {missing}"


def test_the_check_catches_an_undocumented_parameter():
    def f(alpha, beta_two):
        """Uses alpha (and a beta, but not the second one)."""
    assert _undocumented(f) == ["beta_two"]


def test_help_of_compile_documents_every_argument():
    text = inspect.getdoc(gc.compile)
    for name in inspect.signature(gc.compile).parameters:
        assert re.search(rf"\b{name}\b", text), name
    assert '"llvm" (the default' in text  # and says which backend runs by default
    assert inspect.signature(gc.compile).parameters["backend"].default == "llvm"
