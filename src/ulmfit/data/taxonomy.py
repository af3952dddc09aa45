"""Labels in a taxonomy: nodes as paths from a root, read from documents or from a
``parent<TAB>child`` file, checked before anything trains on them.

A node is its path, ``("comp", "comp.graphics")``: the same name under two parents is two
nodes. A document's label is a path given as a list (``["comp", "comp.graphics"]``) or as
one string with a separator (``"Science/Physics/Optics"``); with a taxonomy file, a bare
node name is completed to its path (20 Newsgroups' ``label`` field names the leaf).

A taxonomy file has one edge a line, ``parent<TAB>child``, by node name (a name's parent
is the one line that names it as a child). Errors name the file and line: a line without
exactly two fields, a child given a second parent (the labels must form a tree), an edge
that closes a cycle, a document label that is not a node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Node = tuple[str, ...]  # a path from a root; () is the (implicit) root above the roots


class TaxonomyError(ValueError):
    """A taxonomy file or a label path that cannot be used; the message says where."""


@dataclass(frozen=True)
class Taxonomy:
    """A forest of label nodes, each a path; parents always come before children."""

    nodes: tuple[Node, ...]
    _index: dict[Node, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[Node, int] = {}
        for i, node in enumerate(self.nodes):
            if not node or node in index:
                raise TaxonomyError(f"taxonomy: node {node!r} is empty or repeated")
            if len(node) > 1 and node[:-1] not in index:
                raise TaxonomyError(f"taxonomy: {'/'.join(node)} comes before its parent")
            index[node] = i
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_paths(cls, paths: Iterable[Node]) -> Taxonomy:
        """Every node on the given paths (and their ancestors), in order of appearance."""
        seen: dict[Node, None] = {}
        for path in paths:
            for depth in range(1, len(path) + 1):
                seen.setdefault(tuple(path[:depth]), None)
        return cls(tuple(seen))

    @classmethod
    def read(cls, path: str | Path) -> Taxonomy:
        """A ``parent<TAB>child`` file (see the module's docstring for what is refused)."""
        path = Path(path)
        parent: dict[str, str] = {}
        where: dict[str, int] = {}
        order: list[str] = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) != 2 or not all(x.strip() for x in fields):
                    raise TaxonomyError(
                        f"{path}, line {n}: expected 'parent<TAB>child', got {line!r}"
                    )
                up, child = (x.strip() for x in fields)
                if child in parent:
                    raise TaxonomyError(
                        f"{path}, line {n}: {child!r} gets a second parent {up!r} (line "
                        f"{where[child]} gave it {parent[child]!r}); the labels must form a tree"
                    )
                node: str | None = up
                while node is not None:  # would child become its own ancestor?
                    if node == child:
                        raise TaxonomyError(f"{path}, line {n}: {up!r} -> {child!r} closes a cycle")
                    node = parent.get(node)
                parent[child], where[child] = up, n
                for name in (up, child):
                    if name not in order:
                        order.append(name)

        def path_of(name: str) -> Node:
            out = [name]
            while out[-1] in parent:
                out.append(parent[out[-1]])
            return tuple(reversed(out))

        return cls.from_paths(sorted((path_of(x) for x in order), key=len))

    # -- structure -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._index

    def index(self, node: Node) -> int:
        return self._index[node]

    @property
    def depth(self) -> int:
        return max(len(n) for n in self.nodes)

    def parent(self, node: Node) -> Node | None:
        return node[:-1] or None

    def children(self, node: Node | None) -> list[Node]:
        """The children of ``node`` (None: the roots), in taxonomy order."""
        d = 1 if node is None else len(node) + 1
        return [n for n in self.nodes if len(n) == d and (node is None or n[:-1] == node)]

    def is_leaf(self, node: Node) -> bool:
        return not any(len(n) == len(node) + 1 and n[:-1] == node for n in self.nodes)

    @property
    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if self.is_leaf(n)]

    def level(self, depth: int) -> list[Node]:
        """The nodes at ``depth`` (1: the roots)."""
        return [n for n in self.nodes if len(n) == depth]

    # -- labels ----------------------------------------------------------------------

    def resolve(self, label: str | Sequence[str], sep: str | None, where: str) -> Node:
        """A document's label as a node of this taxonomy: a path (list, or string with
        ``sep``), or a bare node name completed to its path. ``where`` names the file and
        line for the error an unknown node gets."""
        path = parse_path(label, sep, where)
        if path in self:
            return path
        if len(path) == 1:
            named = [n for n in self.nodes if n[-1] == path[0]]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                options = ", ".join("/".join(n) for n in named)
                raise TaxonomyError(
                    f"{where}: {path[0]!r} names {len(named)} nodes ({options}); give its path"
                )
        known = next((path[:d] for d in range(len(path), 0, -1) if path[:d] in self), ())
        detail = (
            f"{'/'.join(known)} has no child {path[len(known)]!r}"
            if known
            else f"{path[0]!r} is not a root"
        )
        raise TaxonomyError(f"{where}: unknown label {'/'.join(path)!r}: {detail}")


def parse_path(label: str | Sequence[str], sep: str | None, where: str) -> Node:
    """``["a", "b"]`` or ``"a/b"`` (with ``sep="/"``) -> ``("a", "b")``; empty parts are
    errors naming ``where``."""
    if isinstance(label, str):
        parts = label.split(sep) if sep else [label]
    elif isinstance(label, Sequence) and all(isinstance(x, str) for x in label):
        parts = list(label)
    else:
        raise TaxonomyError(f"{where}: a label path is a string or a list of strings: {label!r}")
    parts = [p.strip() for p in parts]
    if not parts or not all(parts):
        raise TaxonomyError(f"{where}: empty part in label path {label!r}")
    return tuple(parts)


def ancestors(node: Node) -> Iterator[Node]:
    """``node`` and every node above it, nearest first."""
    for d in range(len(node), 0, -1):
        yield node[:d]


def label_paths(label: Any, sep: str | None, taxonomy: Taxonomy | None, where: str) -> list[Node]:
    """A document's label as one or several paths.

    - a string: one path (split by ``sep``), e.g. ``"Science/Physics"``;
    - a list of strings: without ``sep``, one path (``["comp", "comp.graphics"]``); with
      ``sep``, one path per item (``["Arts/Music", "Science/Physics"]``: hierarchical
      multi-label), whatever the items hold, so that rows of one shape mean one thing;
    - a list of lists: one path each.

    With a taxonomy, each path is resolved in it (a bare node name is completed to its
    path; an unknown node is an error naming ``where``).
    """
    if isinstance(label, str):
        raw: list[Any] = [label]
    elif isinstance(label, Sequence) and label and all(isinstance(x, str) for x in label):
        raw = list(label) if sep else [list(label)]
    elif isinstance(label, Sequence) and label and all(not isinstance(x, str) for x in label):
        raw = list(label)
    else:
        raise TaxonomyError(f"{where}: no label path in {label!r}")
    if taxonomy is None:
        return [parse_path(x, sep, where) for x in raw]
    return [taxonomy.resolve(x, sep, where) for x in raw]


class HierarchicalLabels:
    """Document labels <-> ``(N, K)`` multi-hot rows over a taxonomy's nodes (each
    document's nodes and all their ancestors).

    The column order (``classes``) is the taxonomy's: parents before children, each node
    named by its path joined with ``sep`` (``"/"`` when the labels came without one).
    """

    task = "hierarchical"

    def __init__(self, taxonomy: Taxonomy, sep: str | None = None) -> None:
        self.taxonomy = taxonomy
        self.sep = sep
        joiner = sep or "/"
        self.classes: list[str] = [joiner.join(n) for n in taxonomy.nodes]

    @classmethod
    def fit(
        cls, labels: Sequence[Any], sep: str | None = None, taxonomy: Taxonomy | None = None
    ) -> HierarchicalLabels:
        """The given taxonomy, or the one the labels' paths make (every node on them)."""
        if taxonomy is None:
            paths = [
                p
                for i, lab in enumerate(labels)
                for p in label_paths(lab, sep, None, f"row {i + 1}")
            ]
            if not paths:
                raise ValueError("HierarchicalLabels.fit: no labels at all")
            taxonomy = Taxonomy.from_paths(sorted(paths, key=len))
        return cls(taxonomy, sep)

    def __len__(self) -> int:
        return len(self.taxonomy)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HierarchicalLabels):
            return NotImplemented
        return self.taxonomy.nodes == other.taxonomy.nodes and self.sep == other.sep

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HierarchicalLabels({len(self)} nodes, depth {self.taxonomy.depth})"

    def paths(
        self, labels: Sequence[Any], rows: Sequence[int] | None = None, source: str = ""
    ) -> list[list[Node]]:
        """Each document's label paths, resolved in the taxonomy (errors name the line)."""
        out = []
        for i, lab in enumerate(labels):
            line = f"line {rows[i]}" if rows is not None else f"row {i + 1}"
            where = f"{source}: {line}" if source else line
            out.append(label_paths(lab, self.sep, self.taxonomy, where))
        return out

    def encode(
        self, labels: Sequence[Any], rows: Sequence[int] | None = None, source: str = ""
    ) -> np.ndarray:
        """float32 ``(N, K)``: 1 on each document's nodes and their ancestors."""
        hot = np.zeros((len(labels), len(self)), dtype=np.float32)
        for i, paths in enumerate(self.paths(labels, rows, source)):
            for p in paths:
                for a in ancestors(p):
                    hot[i, self.taxonomy.index(a)] = 1.0
        return hot

    def decode(self, encoded: np.ndarray) -> list[list[str]]:
        """The deepest kept nodes of each row (the paths' ends), as joined path names."""
        arr = np.asarray(encoded).astype(bool)
        nodes = self.taxonomy.nodes
        out = []
        for row in arr:
            kept = {nodes[k] for k in np.flatnonzero(row)}
            ends = [n for n in nodes if n in kept and not any(c[:-1] == n for c in kept)]
            out.append([self.name(n) for n in ends])
        return out

    def name(self, node: Node) -> str:
        return (self.sep or "/").join(node)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "nodes": [list(n) for n in self.taxonomy.nodes], "sep": self.sep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HierarchicalLabels:
        return cls(Taxonomy(tuple(tuple(n) for n in d["nodes"])), d.get("sep"))
