"""Named SQL queries from a file (``-- name:`` blocks) with bound parameters and SQL defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lineage.errors import LineageError

_NAME = re.compile(r"--\s*name:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
_PARAM = re.compile(r"--\s*param:\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<default>.+?)\s*$")
_PLACEHOLDER = re.compile(r"\{(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<type>[^{}]+?)\s*\}")

_NOT_NULLABLE = frozenset(
    {"Array", "Map", "Tuple", "Nested", "Nullable", "LowCardinality", "JSON", "Variant", "Dynamic"}
)


class QueryPackError(LineageError):
    """A query file is malformed, or a query was given parameters it does not take."""


@dataclass(frozen=True, slots=True)
class NamedQuery:
    """One named query: its SQL with ``{key:Type}`` placeholders and a default per parameter.

    A default is a SQL expression, usually a scalar subquery, from the pack file (trusted text);
    values supplied by a user are only ever bound as server-side parameters.
    """

    name: str
    description: str
    sql: str
    defaults: Mapping[str, str]
    types: Mapping[str, str]

    @property
    def params(self) -> tuple[str, ...]:
        """Parameter names, in order of first use in the SQL."""
        return tuple(self.types)

    def render(self, params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """SQL and bound parameters for ``client.query(sql, parameters=bound)``.

        Each parameter missing from ``params`` is replaced by ``CAST((<default>) AS
        Nullable(<Type>))``, so a default that finds no rows matches nothing instead of failing;
        a default may itself use other parameters. Unknown names raise QueryPackError.
        """
        unknown = sorted(set(params) - set(self.types))
        if unknown:
            raise QueryPackError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(self.params) or '(none)'}"
            )
        sql = self.sql
        # Each pass inlines the defaults of unbound placeholders; more passes than parameters
        # means the defaults refer to each other in a cycle.
        for _ in range(len(self.types) + 1):
            pending = [m for m in _PLACEHOLDER.finditer(sql) if m.group("key") not in params]
            if not pending:
                used = {m.group("key") for m in _PLACEHOLDER.finditer(sql)}
                return sql, {key: params[key] for key in self.types if key in used}
            sql = _PLACEHOLDER.sub(lambda m: self._inline(m, params), sql)
        raise QueryPackError(f"{self.name}: parameter defaults refer to each other in a cycle")

    def _inline(self, match: re.Match[str], params: Mapping[str, str]) -> str:
        key = match.group("key")
        if key in params:
            return match.group(0)
        return f"CAST(({self.defaults[key]}) AS {_nullable(match.group('type'))})"


def _nullable(type_: str) -> str:
    if type_.split("(", 1)[0].strip() in _NOT_NULLABLE:
        return type_
    return f"Nullable({type_})"


def parse_pack(text: str, source: str = "<string>") -> dict[str, NamedQuery]:
    """Parse the text of a query pack; raise QueryPackError naming the line of the first fault."""
    queries: dict[str, NamedQuery] = {}
    blocks: list[tuple[int, str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _NAME.match(line.strip())
        if header:
            blocks.append((number, header.group("name"), []))
        elif blocks:
            blocks[-1][2].append(line)
    for number, name, lines in blocks:
        if name in queries:
            raise QueryPackError(f"{source}:{number}: query {name!r} is defined twice")
        queries[name] = _parse_block(name, lines, f"{source}:{number}")
    return queries


def load_pack(path: str | Path) -> dict[str, NamedQuery]:
    """Load every named query in the SQL file at ``path``."""
    file = Path(path)
    return parse_pack(file.read_text(encoding="utf-8"), str(file))


def _parse_block(name: str, lines: list[str], where: str) -> NamedQuery:
    description: list[str] = []
    defaults: dict[str, str] = {}
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped and not stripped.startswith("--"):
            break
        index += 1
        param = _PARAM.match(stripped)
        if param:
            defaults[param.group("key")] = param.group("default")
        elif stripped.startswith("--"):
            text = stripped[2:].strip()
            if text:
                description.append(text)
    body = lines[index:]
    while body and (not body[-1].strip() or body[-1].strip().startswith("--")):
        body.pop()  # comments between queries belong to no query
    sql = "\n".join(body).strip().rstrip(";").strip()
    if not sql:
        raise QueryPackError(f"{where}: query {name!r} has no SQL")
    types: dict[str, str] = {}
    for match in _PLACEHOLDER.finditer(sql + "\n" + "\n".join(defaults.values())):
        key, type_ = match.group("key"), " ".join(match.group("type").split())
        if types.setdefault(key, type_) != type_:
            raise QueryPackError(
                f"{where}: {name}: parameter {key!r} is used as {types[key]} and as {type_}"
            )
    missing = sorted(set(types) - set(defaults))
    if missing:
        raise QueryPackError(
            f"{where}: {name}: expected a '-- param: key = <default>' line for {', '.join(missing)}"
        )
    unused = sorted(set(defaults) - set(types))
    if unused:
        raise QueryPackError(
            f"{where}: {name}: '-- param:' line(s) for {', '.join(unused)} not used in the SQL"
        )
    return NamedQuery(name, " ".join(description), sql, defaults, types)
