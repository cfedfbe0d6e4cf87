"""Load YAML safely while remembering where every key and value came from.

``yaml.compose`` with the SafeLoader builds the node tree (with line/column marks) without
constructing arbitrary objects; we convert nodes to plain data ourselves and record positions
by path, so a validation error on ``pipeline[2].config.delimiter`` can name its line and column.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oxiflow.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:  # yaml (~20 ms) is imported when a file is read: `oxi` verbs without a file never need it
    import yaml

Path = tuple[Any, ...]


@dataclass
class Positions:
    """1-based (line, column) of values and keys by path."""

    file: str | None
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """Position of the value at ``path`` (or its key); falls back to the nearest parent."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if not key and probe in self.keys:
                return self.keys[probe]
            probe = probe[:-1]
        return self.values.get((), (None, None))

    def issue(self, message: str, path: Path, *, key: bool = False, hint: str | None = None) -> ConfigIssue:
        line, column = self.of(path, key=key)
        return ConfigIssue(message, file=self.file, line=line, column=column, hint=hint, path=tuple(path))


def _scalar(node: yaml.ScalarNode) -> Any:
    import yaml

    # Resolve the scalar with the safe constructor's rules (ints, floats, bools, nulls, dates as str).
    tag = node.tag
    if tag == "tag:yaml.org,2002:timestamp":
        return node.value  # keep dates as written; configs compare them as strings
    constructor = yaml.SafeLoader.yaml_constructors.get(tag)
    if constructor is None:
        return node.value
    return constructor(_constructor(), node)


@functools.cache
def _constructor() -> yaml.SafeLoader:
    import yaml

    return yaml.SafeLoader("")


def _convert(node: yaml.Node, path: Path, pos: Positions) -> Any:
    import yaml

    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), pos) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        _constructor().flatten_mapping(node)  # merge keys (<<) as the safe loader does
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                raise ConfigError(
                    [ConfigIssue(f"duplicate key {key!r}", file=pos.file, line=line, column=col, path=child)]
                )
            pos.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, child, pos)
        return out
    raise ConfigError(f"unsupported YAML node {node!r}", file=pos.file)


def load_yaml(text: str, file: str | None = None) -> tuple[Any, Positions]:
    """Parse YAML text; syntax errors become a ConfigError with line and column."""
    import yaml

    pos = Positions(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = exc.problem or str(exc)
        raise ConfigError([ConfigIssue(f"invalid YAML: {problem}", file=file, line=line, column=col)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(f"invalid YAML: {exc}", file=file)]) from None
    if node is None:
        return None, pos
    return _convert(node, (), pos), pos
