"""YAML documents that remember where each value came from.

Validation errors must name the line and column of the offending key, so a
document is loaded together with a map from key paths to PyYAML node marks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.constructor

from watchdog import textfile

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
    quoted: set[Path] = field(default_factory=set)  # values written in quotes: their text starts a column further

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


# Limits that bound the work and memory of one file, whatever it holds. Real
# rule files have a few dozen values nested a few levels deep.
MAX_DEPTH = 32
MAX_VALUES = 20_000  # values in the document, counting each use of an alias anew
MAX_TEXT = 2 * 1024 * 1024  # characters of text in the document, counting each use of an alias anew
MAX_NUMBER_CHARS = 40
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_KIND: dict[type, str] = {dict: "a mapping", list: "a list"}


def _position_in(text: str, index: int) -> Position:
    line = text.count("\n", 0, index) + 1
    return Position(line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _tag(tag: str) -> str:
    """A tag as it was written: ``!!python/object`` rather than ``tag:yaml.org,2002:python/object``."""
    shown = "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag
    return shown if len(shown) <= 60 else shown[:60] + "..."


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Composer:
    """Builds plain data (dict, list, str, int, float, bool, None) from parser events, within the limits.

    PyYAML's own composer and constructor are not used: they follow aliases
    without bound (a few hundred bytes can expand to gigabytes), recurse
    without limit, and build objects from tags. Here every value is counted,
    aliases are copied within the same budget, tags are refused, keys are
    plain text and numbers are finite and short. The first problem raises
    YamlError with its position.
    """

    def __init__(self, loader: Any, doc: Document):
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.chars = 0
        self.anchors: dict[str, tuple[Any, int, int, int]] = {}  # name -> (value, values in it, depth, characters)
        self.open_anchors: set[str] = set()

    def fail(self, event: Any, message: str, path: Path) -> YamlError:
        return YamlError(self.doc.filename, _pos(event.start_mark), message, path)

    def spend(self, event: Any, values: int, path: Path, chars: int = 0) -> None:
        self.count += values
        self.chars += chars
        if self.count > MAX_VALUES:
            raise self.fail(event, f"too many values: over {MAX_VALUES:,} (counting each use of an alias)", path)
        if self.chars > MAX_TEXT:
            raise self.fail(event, f"too much text: over {MAX_TEXT // (1024 * 1024)} MiB (counting each use of an alias)",
                            path)

    def document(self) -> Any:
        """The data of the file's one document (None for an empty file)."""
        self.loader.get_event()  # stream start
        if self.loader.check_event(yaml.StreamEndEvent):
            return None
        self.loader.get_event()  # document start
        data, _, _ = self.node((), 0)
        self.loader.get_event()  # document end
        if not self.loader.check_event(yaml.StreamEndEvent):
            event = self.loader.peek_event()
            raise self.fail(event, "a file holds one YAML document; remove the second '---' and what follows", ())
        return data

    def node(self, path: Path, depth: int) -> tuple[Any, int, int]:
        """The next value as (data, values in it, depth of it)."""
        event = self.loader.get_event()
        self.doc.values.setdefault(path, _pos(event.start_mark))
        if depth > MAX_DEPTH:
            raise self.fail(event, f"nested too deeply: more than {MAX_DEPTH} levels", path)
        if isinstance(event, yaml.AliasEvent):
            return self.alias(event, path, depth)
        if event.tag is not None:
            raise self.fail(event, f"YAML tags such as '{_tag(event.tag)}' are not allowed "
                            "(quote a value that starts with '!')", path)
        self.spend(event, 1, path, len(event.value) if isinstance(event, yaml.ScalarEvent) else 0)
        start, start_chars = self.count, self.chars
        if isinstance(event, yaml.ScalarEvent):
            value: Any = self.scalar(event, path)
            height = 0
        elif isinstance(event, yaml.SequenceStartEvent):
            self.open(event)
            value, height = [], 0
            while not self.loader.check_event(yaml.SequenceEndEvent):
                item, _, item_height = self.node(path + (len(value),), depth + 1)
                value.append(item)
                height = max(height, item_height + 1)
            self.loader.get_event()
        else:
            self.open(event)
            value, height = self.mapping(path, depth)
        size = self.count - start + 1
        if event.anchor is not None:
            chars = self.chars - start_chars + (len(event.value) if isinstance(event, yaml.ScalarEvent) else 0)
            self.anchors[event.anchor] = (value, size, height, chars)
            self.open_anchors.discard(event.anchor)
        return value, size, height

    def open(self, event: Any) -> None:
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)

    def alias(self, event: Any, path: Path, depth: int) -> tuple[Any, int, int]:
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(event, f"alias '*{name}' refers to a value that contains it", path)
        if name not in self.anchors:
            raise self.fail(event, f"alias '*{name}' has no anchor '&{name}' before it", path)
        value, size, height, chars = self.anchors[name]
        if depth + height > MAX_DEPTH:
            raise self.fail(event, f"nested too deeply: more than {MAX_DEPTH} levels", path)
        self.spend(event, size, path, chars)
        return _copy(value), size, height

    def scalar(self, event: Any, path: Path) -> Any:
        text: str = event.value
        if event.style in ("'", '"'):
            self.doc.quoted.add(path)
        if not event.implicit[0]:  # quoted: always a string
            return text
        tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:bool":
            return yaml.constructor.SafeConstructor.bool_values[text.lower()]
        if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            if len(text) > MAX_NUMBER_CHARS:
                raise self.fail(event, f"number too long: more than {MAX_NUMBER_CHARS} characters", path)
            node = yaml.ScalarNode(tag, text)
            constructor = yaml.constructor.SafeConstructor
            number = (constructor.construct_yaml_int if tag.endswith("int") else constructor.construct_yaml_float)(
                self.loader, node)
            if isinstance(number, float) and not math.isfinite(number):
                raise self.fail(event, f"'{text}' is not a finite number", path)
            return number
        return text  # strings, and timestamps kept as written

    def key(self, path: Path) -> tuple[str, Any]:
        event = self.loader.get_event()
        if isinstance(event, yaml.ScalarEvent) and event.tag is None:
            return event.value, event
        if isinstance(event, yaml.ScalarEvent):
            raise self.fail(event, f"YAML tags such as '{_tag(str(event.tag))}' are not allowed", path)
        what = "an alias" if isinstance(event, yaml.AliasEvent) else "a list" if isinstance(
            event, yaml.SequenceStartEvent) else "a mapping"
        raise self.fail(event, f"a key must be plain text, not {what}", path)

    def mapping(self, path: Path, depth: int) -> tuple[dict[str, Any], int]:
        value: dict[str, Any] = {}
        merged: list[tuple[dict[str, Any], Any]] = []
        height = 0
        seen: dict[str, Position] = {}
        while not self.loader.check_event(yaml.MappingEndEvent):
            key, event = self.key(path)
            where = _pos(event.start_mark)
            if key == "<<" and event.implicit[0]:
                item, _, item_height = self.node(path, depth + 1)
                sources = item if isinstance(item, list) else [item]
                if not sources or not all(isinstance(s, dict) for s in sources):
                    raise self.fail(event, "'<<' merges mappings: give an alias of a mapping (<<: *defaults) "
                                    f"or a list of them, not {_KIND.get(type(item), 'a single value')}", path)
                merged.extend((s, event) for s in sources)
                height = max(height, item_height)
                continue
            if key in seen:
                raise YamlError(self.doc.filename, where,
                                f"duplicate key '{key}' (first given at line {seen[key].line})", path + (key,))
            seen[key] = where
            self.doc.keys[path + (key,)] = where
            item, _, item_height = self.node(path + (key,), depth + 1)
            value[key] = item
            height = max(height, item_height + 1)
        self.loader.get_event()
        for source, event in merged:  # keys written here win, then earlier merges over later ones
            for key, item in source.items():
                if key not in value:
                    value[key] = item
                    self.doc.keys.setdefault(path + (key,), _pos(event.start_mark))
                    self.doc.values.setdefault(path + (key,), _pos(event.start_mark))
        return value, height


def _explain_syntax_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[Position, str]:
    """Where a YAML syntax error is, and what to do about it, for the mistakes people make most.

    PyYAML reports a tab as "a character that cannot start any token" and an
    unclosed quote where the file ends; both are said here in the words of
    the fix, at the line that needs it.
    """
    mark = exc.problem_mark or exc.context_mark
    position = _pos(mark) if mark is not None else Position(1, 1)
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    lines = text.splitlines()
    if mark is not None and 0 <= mark.line < len(lines) and "\t" in lines[mark.line][:mark.column + 1] and (
            "cannot start any token" in problem or "tab" in problem):
        column = lines[mark.line].index("\t") + 1
        return (Position(mark.line + 1, column),
                "a tab in the indentation: YAML indents with spaces only (replace the tab with spaces)")
    if "quoted scalar" in context and exc.context_mark is not None:
        opened = exc.context_mark
        quote = text[opened.index] if 0 <= opened.index < len(text) and text[opened.index] in "'\"" else '"'
        return (_pos(opened),
                f"the quote ({quote}) opened here is never closed: add the closing {quote}"
                + (" (the file ends inside it)" if "end of stream" in problem else f" ({problem})"))
    return position, f"YAML syntax error: {problem}" + (f" {context}" if context else "")


def parse(text: str, filename: str) -> Document:
    """Parse one YAML document with positions.

    Raises YamlError for syntax errors and duplicate keys; an empty document
    gives ``data=None``.
    """
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        raise YamlError(filename, _position_in(text, bad.start()),
                        f"control character U+{ord(bad.group()):04X} is not allowed in YAML")
    loader = _Loader(text)
    doc = Document(filename, None)
    try:
        try:
            doc.data = _Composer(loader, doc).document()
        except yaml.MarkedYAMLError as exc:
            position, message = _explain_syntax_error(exc, text)
            raise YamlError(filename, position, message) from None
        except yaml.YAMLError as exc:
            raise YamlError(filename, Position(1, 1), f"YAML error: {exc}") from None
        return doc
    finally:
        loader.dispose()


def load(path: str, display_name: str | None = None) -> Document:
    """Read (bounded, regular files only: see ``textfile``) and parse the YAML file at ``path``.

    ``display_name`` is the name errors give for the file (default: ``path``).
    Raises textfile.UnreadableFile when the file cannot be read as text, and
    YamlError when it is not valid YAML.
    """
    return parse(textfile.read_text(path), display_name or path)
