"""The module-circle check (scripts/module_cycles.py) on small crates written here: it must see
a circle through `use` trees, paths in expressions, `super::` and crate-root re-exports, and
leave a module and its own submodules alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("module_cycles", Path(__file__).with_name("module_cycles.py"))
module_cycles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module_cycles)


def crate(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_circle_through_use_trees_is_found(tmp_path):
    src = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "use crate::{b::{self, Thing}};\npub struct Other;\n",
        "b.rs": "pub struct Thing;\nfn f() { let _ = crate::a::Other; }\n",
    })
    [found] = module_cycles.check(src)
    assert found.startswith("a -> b -> a")
    assert "a.rs:1" in found and "b.rs:2" in found


def test_a_one_way_dependency_and_parent_child_uses_pass(tmp_path):
    src = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\npub use a::Thing;\n",
        "a.rs": "mod inner;\npub use inner::Thing;\n",
        "a/inner.rs": "use super::super::b::Leaf;\npub struct Thing(Leaf);\nfn f() { super::g() }\n",
        "b.rs": "pub struct Leaf;\n// crate::a::Thing in a comment is no use\nconst S: &str = \"crate::a::Thing\";\n",
    })
    assert module_cycles.check(src) == []


def test_a_path_through_a_crate_root_reexport_counts(tmp_path):
    src = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\npub use a::Thing;\n",
        "a.rs": "pub struct Thing(crate::b::Leaf);\n",
        "b.rs": "pub struct Leaf;\nfn f(_: crate::Thing) {}\n",
    })
    [found] = module_cycles.check(src)
    assert "a -> b -> a" in found


def test_unit_test_modules_are_left_out(tmp_path):
    src = crate(tmp_path, {
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "use crate::b::Leaf;\n#[cfg(test)]\nmod tests;\n",
        "a/tests.rs": "use crate::b::Leaf;\n",
        "b.rs": "pub struct Leaf;\n#[cfg(test)]\nmod tests;\n",
        "b/tests.rs": "use crate::a;\n",
    })
    assert module_cycles.check(src) == []


@pytest.mark.parametrize("crate_dir", module_cycles.CRATES)
def test_the_workspace_has_no_circle(crate_dir):
    assert module_cycles.check(module_cycles.ROOT / crate_dir) == []
