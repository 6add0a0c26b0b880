"""Checks an SGLang source tree against an adapter contract by parsing it (``ast``), never importing it.

The same check runs in two places: at install, over the installed sglang package (found with
``importlib.util.find_spec``, so no torch is needed to refuse a release), and in CI, over the
released wheels' sources. A class's methods and ``self.<attr>`` assignments are looked up through its
base classes, following the module's ``from X import Name`` imports inside the same tree (SGLang's
``Scheduler`` gets most of its decode methods from mixins in other files).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sglang_ppd.worker.contract import Attr, Contract, Func, Method


class ContractMismatch(RuntimeError):
    """The first contract entry the source does not satisfy; its message names it."""


@dataclass(frozen=True, slots=True)
class _Module:
    tree: ast.Module
    imports: dict[str, tuple[str, str]]
    """local name -> (module, name) for ``from module import name [as local]``."""


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=64)
def _load(path: Path) -> _Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                imports[alias.asname or alias.name] = (node.module, alias.name)
    return _Module(tree, imports)


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Module statements, including those under ``if``/``try`` (version-guarded definitions)."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        if isinstance(node, ast.If | ast.Try):
            todo[:0] = [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
    return out


def signature_of(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """``self, req, is_retracted=`` : names in order, ``=`` marking a default, ``*args``/``**kw``."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    first_default = len(positional) - len(a.defaults)
    parts = [p.arg + ("=" if i >= first_default else "") for i, p in enumerate(positional)]
    if a.vararg is not None:
        parts.append("*" + a.vararg.arg)
    elif a.kwonlyargs:
        parts.append("*")
    parts += [k.arg + ("" if d is None else "=") for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg is not None:
        parts.append("**" + a.kwarg.arg)
    return ", ".join(parts)


def _find_class(root: Path, module: str, name: str, depth: int = 0) -> tuple[ast.ClassDef, str] | None:
    path = module_file(root, module)
    if path is None or depth > 8:
        return None
    mod = _load(path)
    for node in _top_level(mod.tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, module
    if name in mod.imports:  # re-exported
        src_module, src_name = mod.imports[name]
        return _find_class(root, src_module, src_name, depth + 1)
    return None


def _mro(root: Path, module: str, name: str) -> list[tuple[ast.ClassDef, str]]:
    """The class and its resolvable bases (depth first, as far as the tree defines them)."""
    found = _find_class(root, module, name)
    if found is None:
        return []
    out, todo, seen = [], [found], set()
    while todo:
        cls, mod_name = todo.pop(0)
        if (mod_name, cls.name) in seen:
            continue
        seen.add((mod_name, cls.name))
        out.append((cls, mod_name))
        path = module_file(root, mod_name)
        imports = _load(path).imports if path else {}
        for base in cls.bases:
            if not isinstance(base, ast.Name):
                continue
            target = imports.get(base.id, (mod_name, base.id))
            resolved = _find_class(root, *target)
            if resolved is not None:
                todo.append(resolved)
    return out


_Fn = ast.FunctionDef | ast.AsyncFunctionDef


def _methods(classes: list[tuple[ast.ClassDef, str]], name: str) -> _Fn | None:
    for cls, _ in classes:
        for node in cls.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return node
    return None


def _assigns_attr(classes: list[tuple[ast.ClassDef, str]], name: str) -> bool:
    for cls, _ in classes:
        for node in ast.walk(cls):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for t in targets:
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                for e in elts:
                    on_self = isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name)
                    if on_self and e.value.id == "self" and e.attr == name:  # type: ignore[attr-defined]
                        return True
                    elif isinstance(e, ast.Name) and e.id == name and node in cls.body:
                        return True  # class-level default or dataclass field
    return False


def _check_one(root: Path, entry: Method | Attr | Func) -> str | None:
    """None when ``entry`` holds, else what differs."""
    if isinstance(entry, Func):
        path = module_file(root, entry.module)
        if path is None:
            return f"module {entry.module} is missing"
        for node in _top_level(_load(path).tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry.name:
                return _compare(f"{entry.module}.{entry.name}", entry.params, signature_of(node))
            if entry.params is None and isinstance(node, ast.Assign | ast.ClassDef):
                names = (
                    [node.name]
                    if isinstance(node, ast.ClassDef)
                    else [t.id for t in node.targets if isinstance(t, ast.Name)]
                )
                if entry.name in names:
                    return None
        return f"{entry.module}.{entry.name} is missing"
    classes = _mro(root, entry.module, entry.cls)
    if not classes:
        return f"class {entry.module}.{entry.cls} is missing"
    fn = _methods(classes, entry.name)
    if isinstance(entry, Method):
        if fn is None:
            return f"{entry.cls}.{entry.name} is missing"
        return _compare(f"{entry.cls}.{entry.name}", entry.params, signature_of(fn))
    if fn is not None or _assigns_attr(classes, entry.name):
        return None
    return f"{entry.cls}.{entry.name} is never assigned"


def _compare(what: str, expected: str | None, found: str) -> str | None:
    if expected is None or expected == found:
        return None
    return f"{what}({found}) differs from the expected {what}({expected})"


def check_source(root: Path, contract: Contract) -> None:
    """Raises :class:`ContractMismatch` naming the first entry ``root`` (holding ``sglang/``) breaks."""
    for entry in contract.entries:
        problem = _check_one(root, entry)
        if problem is not None:
            raise ContractMismatch(problem)


def first_mismatch(root: Path, contract: Contract) -> str | None:
    try:
        check_source(root, contract)
    except ContractMismatch as exc:
        return str(exc)
    return None


def canonical_signature(fn: object) -> str:
    """:func:`signature_of`'s form for a live callable (the runtime half of the install check)."""
    import inspect

    parts: list[str] = []
    star_done = False
    for p in inspect.signature(fn).parameters.values():  # type: ignore[arg-type]
        if p.kind is p.VAR_POSITIONAL:
            parts.append("*" + p.name)
            star_done = True
        elif p.kind is p.VAR_KEYWORD:
            parts.append("**" + p.name)
        else:
            if p.kind is p.KEYWORD_ONLY and not star_done:
                parts.append("*")
                star_done = True
            parts.append(p.name + ("" if p.default is p.empty else "="))
    return ", ".join(parts)
