"""YAML documents that remember where each value came from.

Validation errors must name the line and column of the offending key, so a
document is loaded together with a map from key paths to PyYAML node marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml is about ten times faster; fall back to the pure-Python parser
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """A parsed YAML file: its data and where each key and value stands."""

    filename: str
    data: Any
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def position(self, path: Path, *, key: bool = False) -> Position:
        """Where ``path`` stands, or its nearest ancestor when it does not exist."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), Position(1, 1))


class YamlError(Exception):
    """A file that is not valid YAML (or is not a mapping), with its position."""

    def __init__(self, filename: str, position: Position, message: str, path: Path = ()):
        super().__init__(f"{filename}:{position.line}:{position.column}: {message}")
        self.filename = filename
        self.position = position
        self.message = message
        self.path = path


def _pos(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _walk(node: yaml.Node, path: Path, doc: Document) -> None:
    doc.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key == "<<":
                continue
            if key in seen:
                first = seen[key]
                raise YamlError(
                    doc.filename, _pos(key_node.start_mark),
                    f"duplicate key '{key}' (first given at line {first.line})", path + (key,),
                )
            seen[key] = _pos(key_node.start_mark)
            doc.keys[path + (key,)] = seen[key]
            _walk(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), doc)


def parse(text: str, filename: str) -> Document:
    """Parse one YAML document with positions.

    Raises YamlError for syntax errors and duplicate keys; an empty document
    gives ``data=None``.
    """
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            position = _pos(mark) if mark is not None else Position(1, 1)
            problem = exc.problem or "invalid YAML"
            context = f" {exc.context}" if exc.context else ""
            raise YamlError(filename, position, f"YAML syntax error: {problem}{context}") from None
        except yaml.YAMLError as exc:
            raise YamlError(filename, Position(1, 1), f"YAML error: {exc}") from None
        doc = Document(filename, None)
        if node is None:
            return doc
        _walk(node, (), doc)
        doc.data = loader.construct_document(node)
        return doc
    finally:
        loader.dispose()


def load(path: str, display_name: str | None = None) -> Document:
    """Read and parse the YAML file at ``path``; OSError and YamlError propagate.

    ``display_name`` is the name errors give for the file (default: ``path``).
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    return parse(text, display_name or path)
