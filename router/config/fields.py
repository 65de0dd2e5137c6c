"""routes.yaml as YAML nodes that remember their line and field path.

`config.py` walks the tree from `yaml.compose` rather than `yaml.safe_load`: only nodes
keep their start marks, so every error can name the file, the line and the field, and
only nodes show a key given twice (`safe_load` keeps the last one without a word).
`${VAR}` and `${VAR:-default}` are expanded here, in string scalars, as they are read.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import yaml

from router.errors import ConfigError

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

# Messages describe a value by its kind and never quote it: the value may be a key.
_KINDS = {_STR: "a string", _INT: "an integer", _FLOAT: "a number", _BOOL: "true/false"}

# A default may not contain `${`, so `${A:-${B}}` is reported as malformed instead of
# silently expanding to the text "${B".
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}")

# After expansion a scalar is typed by pyyaml's own rules, so `port: ${PORT:-4000}` is
# the int 4000 exactly as `port: 4000` is. The constructor methods used do not cache.
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@dataclass(frozen=True, slots=True)
class Expansion:
    """A string scalar after `${VAR}` expansion."""

    value: str
    unset: tuple[str, ...] = ()  # variables with no value and no default
    referenced: bool = False  # the text named at least one variable


def unset_reason(names: tuple[str, ...]) -> str:
    verb = "is" if len(names) == 1 else "are"
    return f"{', '.join(names)} {verb} not set"


def suggestion(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True, slots=True)
class Field:
    """One node of the document, with what an error about it must say."""

    node: yaml.Node
    path: str  # "models.gpt-5.4.routes[1].key"; "" for the document itself
    line: int  # 1-based
    source: str  # the file's basename
    environ: Mapping[str, str]

    def error(self, message: str) -> ConfigError:
        where = f"{self.source}:{self.line}"
        return ConfigError(
            f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"
        )

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL

    def named(self) -> list[tuple[str, Field]]:
        """A mapping whose keys are names the operator chose (`keys:`, `models:`)."""
        return [(name, value) for name, _, value in self._pairs()]

    def fields(self, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Field]:
        """A mapping of known fields. An optional field given as null counts as absent."""
        found: dict[str, Field] = {}
        empty: list[Field] = []
        previous: tuple[str, Field] | None = None
        for name, key, value in self._pairs():
            if name not in allowed:
                where = self._child(self.path, key, key.start_mark.line + 1)
                hint = suggestion(name, allowed) or _indent_hint(previous)
                raise where.error(f"unknown field '{name}'{hint}")
            if not value.is_null:
                found[name] = value
            elif name in required:
                empty.append(value)  # said after unknown fields: they may be its contents
            previous = (name, value)
        if empty:
            raise empty[0].error("needs a value")
        for name in required:
            if name not in found:
                raise self.error(f"missing required field '{name}'{self._nested_hint(name)}")
        return found

    def _nested_hint(self, name: str) -> str:
        """A required section found one level down: indented too far."""
        for _, _, value in self._pairs():
            if isinstance(value.node, yaml.MappingNode):
                for key, _ in value.node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == name:
                        return (
                            f" (line {key.start_mark.line + 1} has '{name}:' indented under "
                            f"'{value.path}:'; indent it less)"
                        )
        return ""

    def items(self) -> list[Field]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {_describe(self.node)}")
        return [
            self._child(f"{self.path}[{index}]", node, node.start_mark.line + 1)
            for index, node in enumerate(self.node.value)
        ]

    def expand(self) -> Expansion:
        """The string with its variables expanded; unset ones are reported, not raised."""
        node = self.node
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            raise self.error(f"expected a string, got {_describe(node)}")
        parts: list[str] = []
        unset: list[str] = []
        end = 0
        for match in _VARIABLE.finditer(node.value):
            parts.append(self._literal(node.value[end : match.start()]))
            name, default = match.group(1), match.group(2)
            # An empty value counts as unset, as `${VAR:-default}` does in the shell.
            value = self.environ.get(name) or default
            if value is None:
                unset.append(name)
            parts.append(value or "")
            end = match.end()
        parts.append(self._literal(node.value[end:]))
        return Expansion("".join(parts), tuple(dict.fromkeys(unset)), referenced=end > 0)

    def string(self) -> str:
        expansion = self.expand()
        if expansion.unset:
            raise self.error(unset_reason(expansion.unset))
        return expansion.value

    def integer(self, *, minimum: int, maximum: int | None = None) -> int:
        node = self._typed_scalar()
        if node.tag != _INT:
            raise self.error(f"expected an integer, got {_describe(node)}")
        value: int = _CONSTRUCTOR.construct_yaml_int(node)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(f"must be {bound}, got {value}")
        return value

    @property
    def is_scalar(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and not self.is_null

    def positive_number(self) -> float:
        value = self._number()
        if not (math.isfinite(value) and value > 0):
            raise self.error(f"must be a positive number, got {value:g}")
        return value

    def number(self, *, minimum: float) -> float:
        value = self._number()
        if not (math.isfinite(value) and value >= minimum):
            raise self.error(f"must be a number >= {minimum:g}, got {value:g}")
        return value

    def _number(self) -> float:
        node = self._typed_scalar()
        if node.tag not in (_INT, _FLOAT):
            raise self.error(f"expected a number, got {_describe(node)}")
        if node.tag == _INT:  # construct_yaml_float does not read 0x10 or 0o17
            return float(_CONSTRUCTOR.construct_yaml_int(node))
        return float(_CONSTRUCTOR.construct_yaml_float(node))

    def boolean(self) -> bool:
        node = self._typed_scalar()
        if node.tag != _BOOL:
            raise self.error(f"expected true or false, got {_describe(node)}")
        return bool(_CONSTRUCTOR.construct_yaml_bool(node))

    def _literal(self, text: str) -> str:
        if "${" in text:
            raise self.error("malformed variable reference; write ${NAME} or ${NAME:-default}")
        return text

    def _typed_scalar(self) -> yaml.Node:
        node = self.node
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR and "${" in node.value:
            text = self.string()
            return yaml.ScalarNode(_RESOLVER.resolve(yaml.ScalarNode, text, (True, False)), text)
        return node

    def _pairs(self) -> list[tuple[str, yaml.Node, Field]]:
        if not isinstance(self.node, yaml.MappingNode):
            # Nothing where a mapping belongs: most often its fields are not indented under it.
            hint = "; indent its fields under it" if self.is_null else ""
            raise self.error(f"expected a mapping, got {_describe(self.node)}{hint}")
        first_line: dict[str, int] = {}
        pairs: list[tuple[str, yaml.Node, Field]] = []
        for key, value in self.node.value:
            key_line = key.start_mark.line + 1
            at_key = self._child(self.path, key, key_line)
            if key.tag == _MERGE:
                raise at_key.error("YAML merge keys (<<) are not supported")
            if not isinstance(key, yaml.ScalarNode) or not key.value:
                raise at_key.error(f"expected a name, got {_describe(key)}")
            name = key.value
            if name in first_line:
                raise at_key.error(f"duplicate key '{name}' (first on line {first_line[name]})")
            first_line[name] = key_line
            path = f"{self.path}.{name}" if self.path else name
            pairs.append((name, key, self._child(path, value, _value_line(key, value))))
        return pairs

    def _child(self, path: str, node: yaml.Node, line: int) -> Field:
        return Field(node, path, line, self.source, self.environ)


def read_document(text: str, *, source: str, environ: Mapping[str, str]) -> Field:
    """The document's top-level mapping, or ConfigError for bad YAML or an empty file."""
    name = os.path.basename(source) or source
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        # Only problem, context and line are kept: str(exc) quotes the offending line,
        # which may hold a key, so the original is not chained either (`from None`).
        raise ConfigError(f"{name}{_syntax_error(exc)}{_syntax_hint(exc, text)}") from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        where = f" at character {position}" if position is not None else ""
        raise ConfigError(f"{name}: not readable as YAML text{where}") from None
    if root is None:
        raise ConfigError(f"{name}: the file is empty; it needs at least keys: and models:")
    document = Field(root, "", root.start_mark.line + 1, name, environ)
    if not isinstance(root, yaml.MappingNode):
        raise document.error(f"the top level must be a mapping, got {_describe(root)}")
    return document


def _compose(text: str) -> yaml.Node | None:
    """libyaml's parser when PyYAML has it (a thousand routes parse in a tenth of the
    time); a document it refuses is parsed again by the pure-Python one, whose errors
    the hints below read. A document nested past MAX_NESTING is refused first: both
    composers recurse once a level, and libyaml's overflowed the C stack (a segfault,
    seen under CI's oldest dependencies) where the pure-Python one raised
    RecursionError."""
    if _nesting(text) > MAX_NESTING:
        raise RecursionError(f"nested more than {MAX_NESTING} levels deep")
    if fast_loader is not None:
        try:
            return yaml.compose(text, Loader=fast_loader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


fast_loader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)

# A routes.yaml nests about seven levels (models, a model, routes, a route, its price).
MAX_NESTING = 100
_OPENS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _nesting(text: str) -> int:
    """How deep the document's collections nest, from its tokens (a scanner keeps a
    stack, not a recursion); 0 for text the scanner refuses: composing says why."""
    depth = deepest = 0
    try:
        for token in yaml.scan(text, Loader=fast_loader or yaml.SafeLoader):
            if isinstance(token, _OPENS):
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > MAX_NESTING:
                        break
            elif isinstance(token, _CLOSES):
                depth -= 1
    except yaml.YAMLError:
        return 0
    return deepest


def _syntax_error(exc: yaml.MarkedYAMLError) -> str:
    """ ":LINE: YAML syntax error: while parsing X (line N), expected Y, but found Z"."""
    mark = exc.problem_mark or exc.context_mark
    parts = []
    if exc.context:
        context_mark = exc.context_mark
        same_line = context_mark is None or mark is None or context_mark.line == mark.line
        parts.append(exc.context if same_line else f"{exc.context} (line {context_mark.line + 1})")
    if exc.problem:
        parts.append(exc.problem)
    line = f":{mark.line + 1}" if mark is not None else ""
    return f"{line}: YAML syntax error: {', '.join(parts) or 'invalid YAML'}"


def _indent_hint(previous: tuple[str, Field] | None) -> str:
    if previous is None or not previous[1].is_null:
        return ""
    return f" (is it meant to be indented under '{previous[0]}:', which has no value?)"


def _syntax_hint(exc: yaml.MarkedYAMLError, text: str) -> str:
    """What the usual causes of pyyaml's least readable errors look like to a person.

    Only the line's shape is looked at; it is never quoted (it may hold a key)."""
    problem = exc.problem or ""
    if "'\\t'" in problem or "tab" in problem:
        return "; a tab character: YAML indents with spaces only"
    mark = exc.problem_mark
    if mark is not None and "flow" in (exc.context or ""):
        lines = text.splitlines()
        if mark.line < len(lines) and "${" in lines[mark.line]:
            return '; inside [ ] or { }, quote a variable reference: "${VAR}"'
    return ""


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    return _KINDS.get(node.tag, f"a value tagged {node.tag}")


def _value_line(key: yaml.Node, value: yaml.Node) -> int:
    # A block collection starts on the line after its key; the key's line is the one the
    # operator recognises as "this field".
    block = isinstance(value, yaml.CollectionNode) and not value.flow_style
    return (key if block else value).start_mark.line + 1
