"""Is a program coherent? What each name holds, and how it is used next.

SPEC section 4: generated programs must use every name as what it holds (a set is added to, a
string concatenated, a file read only if opened for reading), or the model has nothing to learn by
looking a variable up. This module reads Python source (`ast`, nothing is run) and answers two
questions about it:

- **next uses**: for every name bound to a value whose type the binding shows (`x = set()`,
  `x = ""`, `with open(p, "w") as x`, `self.x = []`, ...), how the name is used next: `.add`,
  ` +=`, `[k] =`, `for ... in`, passed as an argument, ... (`usage_table` sums them over programs:
  the table of docs/results.md that compares generator versions);
- **violations**: uses the type does not support (`.add` on a string, `+=` on a set, `.write` on
  a file opened for reading, iterating an int). The tests run it over generated programs.

It is a static approximation of Python [ours]: statements are read in source order within each
function (branches and loops in the order they are written); a name keeps the type of its last
binding whose type is evident, and is forgotten when rebound to anything else; attributes
`self.x` are tracked per class, across its methods. Builtins' own method tables decide what a
`str`, `list`, `dict`, `set`, `int` or `float` supports, so nothing is listed by hand but files.
"""

from __future__ import annotations

import ast
import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable


class Kind(str, enum.Enum):
    """What a name holds: the types the program generator tracks (synthetic.py) and this module
    recognises from a binding."""

    INT = "int"
    FLOAT = "float"
    STR = "str"
    BOOL = "bool"
    NONE = "None"
    LIST = "list"
    DICT = "dict"
    SET = "set"
    FILE_READ = "file (read)"
    FILE_WRITE = "file (write)"
    INSTANCE = "instance"
    FUNCTION = "function"


_BUILTIN = {Kind.INT: int, Kind.FLOAT: float, Kind.STR: str, Kind.BOOL: bool, Kind.LIST: list, Kind.DICT: dict,
            Kind.SET: set}
METHODS: dict[Kind, frozenset[str]] = {k: frozenset(a for a in dir(t) if not a.startswith("__"))
                                       for k, t in _BUILTIN.items()}
METHODS[Kind.FILE_READ] = frozenset({"read", "readline", "readlines", "close", "seek", "tell", "name", "closed"})
METHODS[Kind.FILE_WRITE] = frozenset({"write", "writelines", "close", "flush", "seek", "tell", "name", "closed"})
METHODS[Kind.NONE] = frozenset()

# Augmented assignments each type supports, and what the right-hand side may be.
_NUMBER_OPS = {"+=", "-=", "*=", "/=", "//=", "%=", "**="}
AUG_OPS: dict[Kind, set[str]] = {
    Kind.INT: _NUMBER_OPS | {"|=", "&=", "^=", "<<=", ">>="}, Kind.FLOAT: _NUMBER_OPS,
    Kind.STR: {"+=", "*="}, Kind.LIST: {"+=", "*="}, Kind.SET: {"|=", "&=", "-=", "^="}, Kind.DICT: {"|="},
    Kind.BOOL: {"|=", "&=", "^="},
}
ITERABLE = {Kind.STR, Kind.LIST, Kind.DICT, Kind.SET, Kind.FILE_READ}
SUBSCRIPTABLE = {Kind.STR, Kind.LIST, Kind.DICT}
ITEM_ASSIGNABLE = {Kind.LIST, Kind.DICT}
CONTAINERS = {Kind.STR, Kind.LIST, Kind.DICT, Kind.SET}

_OPS = {ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*=", ast.Div: "/=", ast.FloorDiv: "//=", ast.Mod: "%=",
        ast.Pow: "**=", ast.BitOr: "|=", ast.BitAnd: "&=", ast.BitXor: "^=", ast.LShift: "<<=", ast.RShift: ">>="}
_CALL_KINDS = {"set": Kind.SET, "frozenset": Kind.SET, "list": Kind.LIST, "sorted": Kind.LIST, "dict": Kind.DICT,
               "str": Kind.STR, "input": Kind.STR, "repr": Kind.STR, "int": Kind.INT, "len": Kind.INT,
               "float": Kind.FLOAT, "bool": Kind.BOOL, "isinstance": Kind.BOOL}
_METHOD_KINDS = {"split": Kind.LIST, "readlines": Kind.LIST, "splitlines": Kind.LIST, "read": Kind.STR,
                 "readline": Kind.STR, "strip": Kind.STR, "upper": Kind.STR, "lower": Kind.STR, "join": Kind.STR,
                 "replace": Kind.STR, "title": Kind.STR, "format": Kind.STR, "capitalize": Kind.STR,
                 "keys": None, "items": None}


def open_kind(call: ast.Call) -> Kind | None:
    """FILE_READ or FILE_WRITE for `open(path[, mode])` with a literal (or absent) mode; None if unclear."""
    mode: ast.expr | None = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return Kind.FILE_READ
    if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)) or "+" in mode.value:
        return None
    return Kind.FILE_WRITE if set(mode.value) & set("wax") else Kind.FILE_READ


def value_kind(node: ast.expr, env: dict[str, Kind]) -> Kind | None:
    """The type a value evidently has, or None when the expression does not show it."""
    if isinstance(node, ast.Constant):
        v = node.value
        return (Kind.NONE if v is None else Kind.BOOL if isinstance(v, bool) else Kind.INT if isinstance(v, int)
                else Kind.FLOAT if isinstance(v, float) else Kind.STR if isinstance(v, str) else None)
    if isinstance(node, ast.JoinedStr):
        return Kind.STR
    if isinstance(node, (ast.List, ast.ListComp)):
        return Kind.LIST
    if isinstance(node, (ast.Dict, ast.DictComp)):
        return Kind.DICT
    if isinstance(node, (ast.Set, ast.SetComp)):
        return Kind.SET
    if isinstance(node, (ast.Compare, ast.BoolOp)) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return Kind.BOOL
    if isinstance(node, ast.Lambda):
        return Kind.FUNCTION
    key = name_key(node)
    if key is not None:
        return env.get(key)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            if node.func.id == "open":
                return open_kind(node)
            return _CALL_KINDS.get(node.func.id)
        if isinstance(node.func, ast.Attribute):
            base = value_kind(node.func.value, env)
            if node.func.attr == "copy" and base in (Kind.LIST, Kind.DICT, Kind.SET):
                return base
            if base == Kind.STR or node.func.attr in ("readlines", "read", "readline", "join"):
                return _METHOD_KINDS.get(node.func.attr)
    if isinstance(node, ast.BinOp):
        left, right = value_kind(node.left, env), value_kind(node.right, env)
        if left == right and left in (Kind.STR, Kind.LIST, Kind.SET) and isinstance(node.op, (ast.Add, ast.BitOr,
                                                                                              ast.BitAnd, ast.Sub)):
            return left
        if left in (Kind.INT, Kind.FLOAT) and right in (Kind.INT, Kind.FLOAT):
            return Kind.FLOAT if Kind.FLOAT in (left, right) or isinstance(node.op, ast.Div) else Kind.INT
    return None


def name_key(node: ast.AST) -> str | None:
    """The tracked name an expression is: `x`, or `self.x` (an attribute of the method's instance)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


@dataclass(frozen=True)
class Violation:
    line: int
    name: str
    kind: Kind
    use: str

    def __str__(self) -> str:
        return f"line {self.line}: `{self.name}` holds {self.kind.value} but is used as `{self.use}`"


@dataclass
class ProgramUses:
    """What `analyse` found in one program or many."""

    next_uses: Counter = field(default_factory=Counter)  # (Kind, use label) -> count
    violations: list[Violation] = field(default_factory=list)
    bindings: Counter = field(default_factory=Counter)  # Kind -> bindings whose type is evident

    def merge(self, other: "ProgramUses") -> "ProgramUses":
        self.next_uses.update(other.next_uses)
        self.bindings.update(other.bindings)
        self.violations += other.violations
        return self


def _use_label(key_node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[str, ast.AST | None]:
    """How an occurrence of a tracked name is used, and the value it is combined with (for +=)."""
    parent = parents.get(key_node)
    if isinstance(parent, ast.Attribute) and parent.value is key_node:
        return f".{parent.attr}", None
    if isinstance(parent, ast.Subscript) and parent.value is key_node:
        return ("[k] =" if isinstance(parent.ctx, ast.Store) else "[k]"), None
    if isinstance(parent, ast.AugAssign) and parent.target is key_node:
        return f" {_OPS[type(parent.op)]}", parent.value
    if isinstance(parent, ast.Compare) and key_node in parent.comparators:
        op = parent.ops[parent.comparators.index(key_node)]
        if isinstance(op, (ast.In, ast.NotIn)):
            return "in", None
    if isinstance(parent, (ast.For, ast.comprehension)) and parent.iter is key_node:
        return "for ... in", None
    if isinstance(parent, ast.Call) and key_node in parent.args:
        return "argument", None
    return "read", None


def _violation(kind: Kind, label: str, other: ast.AST | None, env: dict[str, Kind]) -> bool:
    if kind in (Kind.INSTANCE, Kind.FUNCTION):
        return False
    if label.startswith("."):
        return label[1:] not in METHODS.get(kind, frozenset())
    if label.startswith(" ") and label.endswith("="):
        op = label.strip()
        if op not in AUG_OPS.get(kind, set()):
            return True
        rhs = value_kind(other, env) if other is not None else None
        if kind in (Kind.INT, Kind.FLOAT) and rhs in (Kind.STR, Kind.LIST, Kind.SET, Kind.DICT):
            return True
        if kind == Kind.STR and op == "+=" and rhs not in (None, Kind.STR):
            return True
        return kind == Kind.LIST and op == "+=" and rhs not in (None, Kind.LIST)
    if label == "[k] =":
        return kind not in ITEM_ASSIGNABLE
    if label == "[k]":
        return kind not in SUBSCRIPTABLE
    if label == "in":
        return kind not in CONTAINERS
    if label == "for ... in":
        return kind not in ITERABLE
    return False


class _Scope:
    """One function (or the module): the types of its names, and which await their first use."""

    def __init__(self, result: ProgramUses, shared: dict[str, Kind] | None = None):
        self.env: dict[str, Kind] = {}
        self.shared = shared if shared is not None else {}  # self.x of the enclosing class
        self.pending: set[str] = set()
        self.result = result

    def kinds(self) -> dict[str, Kind]:
        return self.shared | self.env

    def _store(self, key: str) -> dict[str, Kind]:
        return self.shared if key.startswith("self.") else self.env

    def bind(self, key: str, kind: Kind | None) -> None:
        store = self._store(key)
        self.pending.discard(key)
        if kind is None:
            store.pop(key, None)
            return
        store[key] = kind
        self.pending.add(key)
        self.result.bindings[kind] += 1

    def use(self, key: str, node: ast.AST, parents: dict[ast.AST, ast.AST]) -> None:
        kinds = self.kinds()
        kind = kinds.get(key)
        if kind is None:
            return
        label, other = _use_label(node, parents)
        if key in self.pending:
            self.pending.discard(key)
            self.result.next_uses[(kind, label)] += 1
        if _violation(kind, label, other, kinds):
            self.result.violations.append(Violation(getattr(node, "lineno", 0), key, kind, label.strip()))


def _targets(target: ast.expr) -> Iterable[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        for t in target.elts:
            yield from _targets(t)
    elif isinstance(target, ast.Starred):
        yield from _targets(target.value)
    else:
        yield target


def _uses_in(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> list[ast.AST]:
    """Occurrences of tracked names inside an expression (not in nested lambdas), in source order."""
    found = []
    stack: list[tuple[ast.AST, frozenset[str]]] = [(node, frozenset())]
    while stack:
        n, local = stack.pop()
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            # A comprehension's own variables are not the enclosing function's names.
            local = local | {t.id for g in n.generators for t in _targets(g.target) if isinstance(t, ast.Name)}
        key = name_key(n)
        if key is not None and not (isinstance(n, ast.Name) and (n.id in local or isinstance(n.ctx, ast.Store)
                                                                 and not isinstance(parents.get(n), ast.AugAssign))):
            found.append(n)
            if isinstance(n, ast.Attribute):
                continue  # self.x: not also `self`
        stack.extend((c, local) for c in ast.iter_child_nodes(n))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


class _Walker:
    def __init__(self, tree: ast.Module, result: ProgramUses):
        self.parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.result = result

    def block(self, body: list[ast.stmt], scope: _Scope) -> None:
        for stmt in body:
            self.statement(stmt, scope)

    def expr(self, node: ast.AST | None, scope: _Scope) -> None:
        if node is None:
            return
        for n in _uses_in(node, self.parents):
            scope.use(name_key(n), n, self.parents)

    def statement(self, stmt: ast.stmt, scope: _Scope) -> None:
        p = self.parents
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in stmt.decorator_list + stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]:
                self.expr(d, scope)
            self.block(stmt.body, _Scope(self.result, scope.shared if stmt.args.args and
                                         stmt.args.args[0].arg == "self" else None))
        elif isinstance(stmt, ast.ClassDef):
            shared: dict[str, Kind] = {}
            methods = [s for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
            init = [m for m in methods if m.name == "__init__"]
            holder = _Scope(self.result, shared)
            for s in init + [s for s in stmt.body if s not in init]:  # __init__ first: it sets the attributes
                self.statement(s, holder)
        elif isinstance(stmt, ast.Assign):
            self.expr(stmt.value, scope)
            for t in stmt.targets:
                for tt in _targets(t):
                    if not isinstance(tt, ast.Name) and name_key(tt) is None:
                        self.expr(tt, scope)  # x[k] = v, x.y = v: uses of x
            kinds = scope.kinds()
            single = len(stmt.targets) == 1 and not isinstance(stmt.targets[0], (ast.Tuple, ast.List))
            if not single and isinstance(stmt.value, ast.Tuple) and isinstance(stmt.targets[0], ast.Tuple) \
                    and len(stmt.targets[0].elts) == len(stmt.value.elts):  # a, b = b, a
                pairs = [(t, value_kind(v, kinds)) for t, v in zip(stmt.targets[0].elts, stmt.value.elts)]
            else:
                kind = value_kind(stmt.value, kinds) if single else None
                pairs = [(tt, kind) for t in stmt.targets for tt in _targets(t)]
            for tt, kind in pairs:
                key = name_key(tt)
                if key is not None:
                    scope.bind(key, kind)
        elif isinstance(stmt, ast.AnnAssign):
            self.expr(stmt.value, scope)
            key = name_key(stmt.target)
            if key is not None and stmt.value is not None:
                scope.bind(key, value_kind(stmt.value, scope.kinds()))
        elif isinstance(stmt, ast.AugAssign):
            self.expr(stmt.value, scope)
            key = name_key(stmt.target)
            if key is not None:
                scope.use(key, stmt.target, p)
            else:
                self.expr(stmt.target, scope)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.expr(stmt.iter, scope)
            for tt in _targets(stmt.target):
                if name_key(tt) is not None:
                    scope.bind(name_key(tt), None)
            self.block(stmt.body, scope)
            self.block(stmt.orelse, scope)
        elif isinstance(stmt, (ast.While, ast.If)):
            self.expr(stmt.test, scope)
            self.block(stmt.body, scope)
            self.block(stmt.orelse, scope)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.expr(item.context_expr, scope)
                if item.optional_vars is not None and name_key(item.optional_vars) is not None:
                    ctx = item.context_expr
                    kind = open_kind(ctx) if isinstance(ctx, ast.Call) and isinstance(ctx.func, ast.Name) \
                        and ctx.func.id == "open" else None
                    scope.bind(name_key(item.optional_vars), kind)
            self.block(stmt.body, scope)
        elif isinstance(stmt, ast.Try):
            self.block(stmt.body, scope)
            for h in stmt.handlers:
                self.block(h.body, scope)
            self.block(stmt.orelse, scope)
            self.block(stmt.finalbody, scope)
        else:
            for child in ast.iter_child_nodes(stmt):
                self.expr(child, scope)


def analyse(source: str) -> ProgramUses:
    """Next uses and violations of one program (a SyntaxError propagates)."""
    tree = ast.parse(source)
    result = ProgramUses()
    _Walker(tree, result).block(tree.body, _Scope(result))
    return result


def analyse_all(programs: Iterable[str]) -> ProgramUses:
    total = ProgramUses()
    for text in programs:
        total.merge(analyse(text))
    return total


def usage_table(uses: ProgramUses, kinds: Iterable[Kind] = (Kind.SET, Kind.STR, Kind.LIST, Kind.DICT, Kind.INT,
                                                             Kind.FILE_READ, Kind.FILE_WRITE),
                top: int = 6) -> list[tuple[Kind, int, list[tuple[str, int]], int]]:
    """Per type: (type, next uses in all, the `top` commonest uses with counts, uses that violate it)."""
    rows = []
    violating = Counter(v.kind for v in uses.violations)
    for kind in kinds:
        counts = Counter({label: n for (k, label), n in uses.next_uses.items() if k == kind})
        rows.append((kind, sum(counts.values()), counts.most_common(top), violating[kind]))
    return rows
