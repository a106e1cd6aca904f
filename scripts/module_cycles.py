#!/usr/bin/env python3
"""Fails when the modules of a crate use each other in a circle (`make lint`).

The rule (ARCHITECTURE.md, "Invariants"): within a crate, the modules that sit side by side
(children of one parent) depend on each other in one direction only. A module and its own
submodules are one unit (a parent re-exports or uses its children, a child uses `super::`), so
edges between a module and its ancestors do not count; every other `use` between two modules is
lifted to the pair of siblings under their nearest common ancestor, and those sibling graphs must
have no cycle.

It reads the source, not the compiler's view: every `crate::`, `super::` and `self::` path in
`use` trees and in expressions is resolved to the longest module prefix that exists as a file
or an inline `mod name {` block. Unit-test modules (`tests.rs`, `#[cfg(test)] mod tests`) are
left out: they only look inward. `cargo modules dependencies --acyclic` would do the same from
rust-analyzer, but it takes longer to build here than the whole CI run; this is the rule it
would check, in a hundred lines.

    scripts/module_cycles.py [CRATE_SRC_DIR ...]     default: every workspace crate's src/
Prints each cycle as `crate: a -> b -> a (a.rs:12 uses b::X; b.rs:40 uses a::Y)` and exits 1.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRATES = ["policies/src", "filter/src", "host/src", "host/runtime/src"]

USE_RE = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);", re.S)
# `pub use` of a module's own item tree (lib.rs's `pub use plugin::{Plugin, ...}`): a path
# through the re-export is a use of the module that defines the item.
REEXPORT_RE = re.compile(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]*);", re.S)
PATH_RE = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
INLINE_MOD_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*\{", re.M)
CFG_TEST_MOD_RE = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*[;{]")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    # String literals can hold `crate::` in messages; blank them, keeping line numbers.
    return re.sub(r'"(?:\\.|[^"\\])*"', lambda m: '"' + "\n" * m.group(0).count("\n") + '"', text)


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts.pop()
    return tuple(parts)


def expand_use_tree(tree: str) -> list[str]:
    """`crate::a::{b, c::{d, e}}` -> ["crate::a::b", "crate::a::c::d", "crate::a::c::e"]."""
    tree = re.sub(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*", "", tree)
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [p for item in items if item for p in expand_use_tree(head + item)]


def resolve(
    path: str, here: tuple[str, ...], modules: set[tuple[str, ...]], reexports: dict | None = None
) -> tuple[str, ...] | None:
    segments = path.split("::")
    base: list[str] = []
    if segments[0] == "crate":
        segments = segments[1:]
    else:
        base = list(here)
        while segments and segments[0] in ("self", "super"):
            if segments.pop(0) == "super":
                if not base:
                    return None
                base.pop()
    target = tuple(base)
    for seg in segments:
        if target + (seg,) in modules:
            target = target + (seg,)
        elif reexports and (target, seg) in reexports:
            return reexports[(target, seg)]
        else:
            break
    return target


def check(src: Path) -> list[str]:
    files = [
        f
        for f in sorted(src.rglob("*.rs"))
        if f.name != "tests.rs" and "tests" not in f.relative_to(src).parts[:-1]
    ]
    modules = {module_of(src, f) for f in files}
    texts = {}
    for f in files:
        text = strip_comments(f.read_text())
        here = module_of(src, f)
        for test_mod in CFG_TEST_MOD_RE.findall(text):
            modules.discard(here + (test_mod,))
        for name in INLINE_MOD_RE.findall(text):
            modules.add(here + (name,))
        texts[f] = (here, text)

    reexports: dict[tuple[tuple[str, ...], str], tuple[str, ...]] = {}
    for here, text in texts.values():
        for m in REEXPORT_RE.finditer(text):
            for path in expand_use_tree(m.group(1)):
                name = path.split("::")[-1]
                rooted = path if path.split("::")[0] in ("crate", "super", "self") else "self::" + path
                target = resolve(rooted, here, modules)
                if target is not None and target != here:
                    reexports[(here, name)] = target

    # (from, to) sibling pair under a common parent -> first place seen
    edges: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
    for f, (here, text) in texts.items():
        paths = [(m.start(), p) for m in USE_RE.finditer(text) for p in expand_use_tree(m.group(1))]
        paths += [(m.start(), m.group(1)) for m in PATH_RE.finditer(text)]
        for pos, path in paths:
            target = resolve(path, here, modules, reexports)
            if target is None:
                continue
            common = 0
            while common < min(len(here), len(target)) and here[common] == target[common]:
                common += 1
            if common in (len(here), len(target)):
                continue  # the same module, an ancestor or a descendant
            a, b = here[: common + 1], target[: common + 1]
            line = text.count("\n", 0, pos) + 1
            edges.setdefault((a, b), f"{f.relative_to(src)}:{line} uses {path}")

    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    return [describe(cycle, members, edges) for cycle, members in cycles(graph)]


def cycles(graph: dict) -> list[list]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append((shortest_cycle(graph, sorted(component)[0], set(component)), sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(graph, start, within):
    frontier, parent = [start], {start: None}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w in within and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def describe(cycle, members, edges) -> str:
    names = ["::".join(m) for m in cycle]
    why = [edges[(a, b)] for a, b in zip(cycle, cycle[1:])]
    text = f"{' -> '.join(names)} ({'; '.join(why)})"
    if len(members) > len(cycle) - 1:
        text += f"; all of {', '.join('::'.join(m) for m in members)} are in circles with each other"
    return text


def main(argv: list[str]) -> int:
    failures = 0
    for crate in argv or CRATES:
        src = (ROOT / crate) if not Path(crate).is_absolute() else Path(crate)
        for cycle in check(src):
            print(f"{crate}: module circle: {cycle}")
            failures += 1
    if failures:
        print(f"{failures} module circle(s); ARCHITECTURE.md, 'Invariants', says how modules depend")
        return 1
    print(f"module circles: none in {', '.join(argv or CRATES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
