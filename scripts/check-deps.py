#!/usr/bin/env python3
"""Fails on an import cycle between modules of a crate, or a workspace dependency pointing the wrong way.

Modules: every crate's module tree, read from its files. At each level of the tree, the children of one module
are compared as siblings: child A depends on child B when a file anywhere under A names a path into B
(`crate::b::..`, `super::b::..`, `use` trees included). A cycle among siblings is an error. A child naming its
own parent's items (`super::Thing`) is not an edge: a module's own file is its public face. Test-only code
(`#[cfg(test)]` modules and files named `tests.rs` / `*_tests.rs`) is skipped: tests may reach anywhere.

Crates: `LAYERS` below is the allowed direction; a crate may depend only on crates listed before it.

Usage: scripts/check-deps.py [--graph]   (--graph prints every level's edges)
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each crate may depend (normal or build dependencies) only on crates of a lower index.
LAYERS = {
    "soulbox-protocol": 0,
    "soulbox-layer": 0,
    "soulbox-volumes": 0,
    "soulbox-http": 0,
    "soulbox-envd": 1,
    "soulbox-runtime": 1,
    "soulbox": 1,
    "soulbox-templates": 2,
    "soulbox-server": 3,
    "soulbox-cli": 4,
}
# The control plane library does not talk to itself through the client SDK. (soulbox-templates may: the engine
# reaches a build sandbox's envd with the SDK's client, pointed straight at the sandbox.)
FORBIDDEN = {("soulbox-server", "soulbox")}


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def drop_test_modules(text: str) -> str:
    """Removes `#[cfg(test)] mod x { ... }` bodies (brace-matched) and `#[cfg(test)] mod x;` lines."""
    out, i = [], 0
    pattern = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*([;{])")
    while True:
        m = pattern.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i : m.start()])
        if m.group(1) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j


def expand_use_tree(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> [`a::b`, `a::c::d`, `a::c::e`]."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0]]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [p for part in parts if part for p in expand_use_tree(prefix + part)]


def referenced_paths(text: str) -> list[str]:
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use_tree(m.group(1)))
    # Paths written inline in code (`crate::a::b::f()`, `super::x::Y`).
    paths.extend(re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text))
    return paths


class Crate:
    def __init__(self, name: str, root_file: Path):
        self.name = name
        self.files: dict[tuple, Path] = {}  # module path -> file
        self.inline_children: dict[tuple, set] = {}
        self.load((), root_file)

    def children_of(self, module: tuple) -> set:
        return {m[len(module)] for m in self.files if len(m) > len(module) and m[: len(module)] == module}

    def load(self, module: tuple, file: Path):
        self.files[module] = file
        text = strip_comments_and_strings(file.read_text())
        text = drop_test_modules(text)
        for m in re.finditer(r"^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            child = m.group(1)
            if child == "tests" or child.endswith("_tests"):
                continue
            base = file.parent if file.name in ("lib.rs", "main.rs", "mod.rs") else file.with_suffix("")
            for candidate in (base / f"{child}.rs", base / child / "mod.rs"):
                if candidate.exists():
                    self.load(module + (child,), candidate)
                    break

    def resolve(self, module: tuple, path: str) -> tuple | None:
        segments = path.split("::")
        if segments[0] == "crate":
            base, rest = (), segments[1:]
        elif segments[0] in ("super", "self"):
            base = module
            while segments and segments[0] in ("super", "self"):
                if segments[0] == "super":
                    base = base[:-1]
                segments = segments[1:]
            rest = segments
        else:
            return None
        target = base
        for seg in rest:
            if target + (seg,) in self.files:
                target = target + (seg,)
            else:
                break
        return target

    def edges(self):
        """(from module, to module) for every reference between two files of the crate."""
        for module, file in self.files.items():
            text = drop_test_modules(strip_comments_and_strings(file.read_text()))
            for path in referenced_paths(text):
                target = self.resolve(module, path)
                if target is not None and target != module:
                    yield module, target


def sibling_cycles(crate: Crate, show_graph: bool) -> list[str]:
    errors = []
    edges = set(crate.edges())
    parents = sorted({m[:-1] for m in crate.files if m})
    for parent in parents:
        depth = len(parent)
        graph: dict[str, set] = {c: set() for c in crate.children_of(parent)}
        for src, dst in edges:
            if len(src) > depth and len(dst) > depth and src[:depth] == parent and dst[:depth] == parent:
                a, b = src[depth], dst[depth]
                if a != b:
                    graph[a].add(b)
        if show_graph and any(graph.values()):
            print(f"{crate.name}::{'::'.join(parent) or '(root)'}")
            for a in sorted(graph):
                if graph[a]:
                    print(f"  {a} -> {', '.join(sorted(graph[a]))}")
        for component in strongly_connected(graph):
            if len(component) > 1:
                where = "::".join((crate.name.replace("-", "_"),) + parent)
                errors.append(f"import cycle in {where}: {' <-> '.join(sorted(component))}")
    return errors


def strongly_connected(graph: dict[str, set]) -> list[list[str]]:
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            result.append(component)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return result


def crate_direction_errors() -> list[str]:
    errors = []
    for manifest in sorted(ROOT.glob("crates/*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        name = data["package"]["name"]
        if name not in LAYERS:
            errors.append(f"{name}: not placed in scripts/check-deps.py LAYERS")
            continue
        for section in ("dependencies", "build-dependencies"):
            for dep in data.get(section, {}):
                if dep not in LAYERS:
                    continue
                if LAYERS[dep] >= LAYERS[name] or (name, dep) in FORBIDDEN:
                    errors.append(f"{name} depends on {dep}: dependencies must point down (see LAYERS)")
    return errors


def main() -> int:
    show_graph = "--graph" in sys.argv
    errors = crate_direction_errors()
    for manifest in sorted(ROOT.glob("crates/*/Cargo.toml")):
        src = manifest.parent / "src"
        for root_file in (src / "lib.rs", src / "main.rs"):
            if root_file.exists():
                errors.extend(sibling_cycles(Crate(f"{manifest.parent.name}/{root_file.name}", root_file), show_graph))
        for bin_file in sorted((src / "bin").glob("*.rs")) if (src / "bin").is_dir() else []:
            errors.extend(sibling_cycles(Crate(f"{manifest.parent.name}/bin/{bin_file.name}", bin_file), show_graph))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not errors:
        print("check-deps: no module import cycles; crate dependencies point one way")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
