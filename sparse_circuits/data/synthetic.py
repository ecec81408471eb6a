"""Simple Python programs, generated: the embedded counterpart of the paper's simple-idiom corpus.

[ours] The paper's pretraining mix had ~10B tokens of simple, LLM-written Python beside realistic
code; its generator is not public. Version 2 of ours writes **coherent, typed** programs: it
tracks what every name in scope holds (int, float, str, bool, None, list, dict, set, a file
opened for reading or for writing, an instance of a class it defined, a function) and chooses
every use from what that type supports: sets get `.add` / `.discard` / `in` / `|`, strings `+=` /
`.upper()` / `.split()` / f-strings, lists `.append` / `.extend` / indexing / `.sort()`, dicts
`[k] =` / `.get` / `.items()`, numbers arithmetic and comparisons, files `.read()` or `.write()`
as their mode allows, instances the methods and attributes their class defines. A model can only
learn to look a variable up if the lookup predicts something; in version 1 (`synthetic_v1.py`,
kept to rebuild its corpora) any name took any use, and only a three-line template tied a type
to its use.

What the programs hold, beyond v1's idioms (defaults and keyword arguments, classes, every loop,
`if`/`elif`/`else`, ternaries, comprehensions, `with` blocks, literals, f-strings and both quote
types, lambdas, swaps, `enumerate` / `range`, `while True`, `try`, comments and docstrings):
- functions named for what they do, and doing it: a `load_`/`read_` function opens its path for
  reading and returns what it read, a `save_`/`write_` one opens for writing; `count_` returns an
  int, `unique_` a set, `join_` a string, `group_` a dict, `is_`/`has_` a bool; later code calls
  them with arguments of the right types and uses what they return as that type;
- classes that store their parameters under the same names in `__init__` (`self.x = x`) and use
  those attributes, as their types allow, in methods; instances used through those methods;
- accumulators of several types filled in one loop (a set and a string side by side: only the
  name says which gets `.add` and which `+=`); names used several times over several lines,
  several alive at once; swaps and tuple unpacking that keep both names alive;
- a theme of a few nouns per program, so that names recur across it (bursty).

`sparse_circuits.data.coherence` checks the result (no use a type does not support: the tests)
and tabulates each type's next uses for both versions (docs/results.md).

It belongs to the data stage and shares no code or name pools with `sparse_circuits.tasks`; it
never writes a task's prompt template (the contamination report, `tasks.contamination`, measures
that on every data directory). Every file it writes parses (`ast.parse`, checked by the tests),
and a seed fixes the stream.
"""

from __future__ import annotations

import builtins
import keyword
import random
from dataclasses import dataclass, field
from typing import Iterator

from . import synthetic_v1
from .coherence import Kind
from .synthetic_v1 import ADJECTIVES, CLASS_NOUNS, NOUNS, TEXT_WORDS

GENERATOR_VERSION = 2  # the default; `generate_programs(seed, version)` also writes version 1
VERSIONS = (1, 2)

# Names that say nothing of what they hold: only a lookup of their binding tells the type.
NEUTRAL_NAMES = """
current result data out acc buf value temp store pool cache batch entry record state info item
output collected parts pending stuff target source extra holder bucket chunk payload
""".split()
# [ours] Share of a container's or string's uses that are its type's own statement (`s.add(x)`,
# `t += x`, `items.append(x)`, `d[k] = v`): the decisions a model can only make by looking the name's
# binding up. A first draft without it (and with fewer neutral names) taught no binding at all in
# 8M tokens (docs/results.md, issue 26).
SIGNATURE_SHARE = 0.5
SIGNATURE_USE = {Kind.SET, Kind.LIST, Kind.DICT, Kind.STR, Kind.INT}
# Verbs of functions that do a bit of everything: none promises a return type or a file mode.
PROCESS_VERBS = ["process", "handle", "update", "build", "prepare", "run", "compute", "render", "reset", "show",
                 "clean", "merge", "move", "apply", "refresh", "run_all"]
ITEM_NAMES = ["x", "item", "value", "entry", "elem", "part"]
PATH_NAMES = ["path", "filename", "file_name", "src_path", "file_path"]
EXTENSIONS = ["txt", "csv", "log", "json", "dat", "md"]
RESERVED = set(dir(builtins)) | set(keyword.kwlist) | {"self", "main", "f", "math", "os", "sys", "json", "random",
                                                       "time", "re", "logging", "string"}
SEPARATORS = ['", "', '" "', "', '", "' '", '""']
KIND_WEIGHTS = {Kind.LIST: 4, Kind.STR: 4, Kind.INT: 4, Kind.SET: 3, Kind.DICT: 3, Kind.FLOAT: 1.2, Kind.BOOL: 1.5}
ELEMENTS = {Kind.LIST: [Kind.INT, Kind.STR, Kind.STR, Kind.FLOAT], Kind.SET: [Kind.INT, Kind.STR, Kind.STR],
            Kind.DICT: [Kind.INT, Kind.STR, Kind.LIST, Kind.INT]}


@dataclass
class Var:
    """A name in scope and what it holds."""

    name: str
    kind: Kind
    elem: Kind | None = None  # items of a list or set, values of a dict (keys are strings)
    cls: "ClassSpec | None" = None  # the class of an instance
    uses: int = 0
    born: int = 0  # statement count when bound: recent names are used more (bursty)


@dataclass
class Signature:
    """A function or method the program defined: what it takes and what it gives back."""

    name: str
    params: list[Var]  # required first, then those with defaults
    defaults: dict[str, str]
    returns: Kind | None = None
    ret_elem: Kind | None = None


@dataclass
class ClassSpec:
    name: str
    attrs: list[Var] = field(default_factory=list)  # names without `self.`
    methods: list[Signature] = field(default_factory=list)


class _Gen:
    """One random stream, what the program has defined so far and the names in scope."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.scope: dict[str, Var] = {}
        self.constants: dict[str, Var] = {}
        self.functions: list[Signature] = []
        self.classes: list[ClassSpec] = []
        self.theme: list[str] = []
        self.clock = 0
        self.imports: set[str] = set()

    # -- names ---------------------------------------------------------------------------------

    def noun(self) -> str:
        if self.theme and self.rng.random() < 0.7:
            return self.rng.choice(self.theme)
        return self.rng.choice(NOUNS)

    plural = synthetic_v1._Gen.plural

    def name_for(self, kind: Kind, elem: Kind | None = None, cls: ClassSpec | None = None) -> str:
        for attempt in range(12):
            name = self._candidate(kind, elem, cls)
            if attempt > 8:
                name = f"{name}_{attempt - 7}"
            if name.isidentifier() and name not in RESERVED and name not in self.scope \
                    and name not in self.constants and all(f.name != name for f in self.functions):
                return name
        return f"{name}_{self.clock}"

    def _candidate(self, kind: Kind, elem: Kind | None, cls: ClassSpec | None) -> str:
        rng, n = self.rng, self.noun()
        if kind == Kind.INSTANCE and cls is not None:
            return rng.choice([cls.name.lower(), f"{rng.choice(ADJECTIVES)}_{cls.name.lower()}", f"my_{cls.name.lower()}"])
        if kind in (Kind.FILE_READ, Kind.FILE_WRITE):
            return rng.choice(["f", "fh", "handle"] + (["infile", "reader", "src"] if kind == Kind.FILE_READ
                                                       else ["out", "outfile", "writer"]))
        if kind == Kind.FUNCTION:
            return rng.choice([f"{rng.choice(['get', 'make', 'to', 'key'])}_{n}", "key_fn", "transform", "scale"])
        if rng.random() < 0.6:  # most names say nothing of their type: only the binding does
            return rng.choice(NEUTRAL_NAMES + [n, f"{rng.choice(ADJECTIVES)}_{n}", n, f"{n}_data"])
        p = self.plural(n)
        return rng.choice({
            Kind.LIST: [p, f"{n}_list", f"{rng.choice(ADJECTIVES)}_{p}", f"all_{p}"],
            Kind.SET: [f"seen_{p}", f"unique_{p}", f"{n}_set", f"{n}_ids", "seen", "visited"],
            Kind.DICT: [f"{n}_map", f"{p}_by_name", f"{n}_counts", f"{n}_index", "counts", "lookup"],
            Kind.STR: [f"{n}_name", f"{n}_text", "text", "label", "message", f"{n}_label", "title", "line"],
            Kind.INT: [f"{n}_count", "count", "total", f"n_{p}", "index", f"{n}_id", "size", "limit"],
            Kind.FLOAT: [f"{n}_price", "average", "ratio", f"{n}_score", "rate", f"{n}_weight"],
            Kind.BOOL: ["found", "done", f"is_{rng.choice(ADJECTIVES)}", f"has_{p}", "ok", f"{n}_ok", "flag"],
            Kind.NONE: [f"best_{n}", "best", f"last_{n}", "previous"],
        }[kind])

    # -- scope ---------------------------------------------------------------------------------

    def bind(self, name: str, kind: Kind, elem: Kind | None = None, cls: ClassSpec | None = None) -> Var:
        var = Var(name, kind, elem, cls, 0, self.clock)
        self.scope[name] = var
        return var

    def vars_of(self, *kinds: Kind, elem: Kind | None = None) -> list[Var]:
        return [v for v in self.scope.values() if v.kind in kinds and (elem is None or v.elem == elem)]

    def pick(self, candidates: list[Var]) -> Var:
        """A variable to use: recently bound and little-used ones first (names recur over a few lines)."""
        weights = [(3.0 if v.uses == 0 else 2.5 if v.uses < 3 else 0.8) * (2.0 if self.clock - v.born < 6 else 1.0)
                   for v in candidates]
        var = self.rng.choices(candidates, weights=weights)[0]
        var.uses += 1
        return var

    def operand(self, kind: Kind, elem: Kind | None = None, fresh: float = 0.3) -> str:
        """An expression of `kind`: a variable that holds it, or a literal."""
        found = self.vars_of(kind, elem=elem) + [c for c in self.constants.values() if c.kind == kind
                                                 and (elem is None or c.elem == elem)]
        if found and self.rng.random() > fresh:
            return self.pick(found).name
        return self.literal(kind, elem)

    # -- literals ------------------------------------------------------------------------------

    def number(self) -> str:
        r = self.rng.random()
        if r < 0.65:
            return str(self.rng.randint(0, 10))
        return str(self.rng.choice([12, 20, 24, 50, 60, 99, 100, 255, 365, 1000]))

    def quote(self) -> str:
        return '"' if self.rng.random() < 0.6 else "'"

    def word(self) -> str:
        return self.rng.choice(TEXT_WORDS)

    def string(self, q: str | None = None) -> str:
        q = q or self.quote()
        return f"{q}{' '.join(self.word() for _ in range(self.rng.randint(1, 3)))}{q}"

    def path_literal(self) -> str:
        q = self.quote()
        return f"{q}{self.noun()}.{self.rng.choice(EXTENSIONS)}{q}"

    def literal(self, kind: Kind, elem: Kind | None = None) -> str:
        rng = self.rng
        if kind == Kind.INT:
            return self.number()
        if kind == Kind.FLOAT:
            return rng.choice(["0.0", "1.0", "0.5", "1.5", "2.5", "0.25", "10.0", "99.9"])
        if kind == Kind.STR:
            return self.string()
        if kind == Kind.BOOL:
            return rng.choice(["True", "False"])
        if kind == Kind.NONE:
            return "None"
        if kind == Kind.LIST:
            if elem == Kind.LIST:
                return "[" + ", ".join("[" + ", ".join(self.number() for _ in range(rng.randint(1, 3))) + "]"
                                       for _ in range(rng.randint(2, 3))) + "]"
            n = rng.choice([0, 0, 2, 3, 4])
            return "[" + ", ".join(self.literal(elem or Kind.INT) for _ in range(n)) + "]"
        if kind == Kind.SET:
            if rng.random() < 0.6:
                return "set()"
            return "{" + ", ".join(self.literal(elem or Kind.INT) for _ in range(rng.randint(1, 3))) + "}"
        if kind == Kind.DICT:
            if rng.random() < 0.5:
                return rng.choice(["{}", "{}", "dict()"])
            q = self.quote()
            keys = list(dict.fromkeys(self.noun() for _ in range(rng.randint(1, 3))))
            return "{" + ", ".join(f"{q}{k}{q}: {self.literal(elem or Kind.INT)}" for k in keys) + "}"
        raise ValueError(kind)

    # -- values of a type (the right-hand sides of new bindings) ----------------------------------

    def value(self, kind: Kind, elem: Kind | None) -> str:
        """A fresh value of `kind`: mostly an evident one (a literal, a constructor), sometimes
        computed from what is in scope."""
        rng = self.rng
        same = [v for v in self.vars_of(kind, elem=elem) if kind in (Kind.INT, Kind.STR, Kind.LIST, Kind.FLOAT)]
        if same and rng.random() < 0.25:  # a ternary on a name: `x = count if count > 3 else 0`
            v = self.pick(same)
            cond = {Kind.INT: f"{v.name} > {self.number()}", Kind.FLOAT: f"{v.name} > 0",
                    Kind.STR: rng.choice([v.name, f"not {v.name}"]), Kind.LIST: rng.choice([v.name, f"len({v.name}) > 1"])}
            return f"{v.name} if {cond[kind]} else {self.literal(kind, elem)}"
        strs = [v for v in self.vars_of(Kind.STR) if v.name.isidentifier()]
        if kind == Kind.DICT and len(strs) >= 2 and rng.random() < 0.8:  # `{name: count, label: total}`
            a, b = rng.sample(strs, 2)
            e = elem or Kind.INT
            return f"{{{a.name}: {self.operand(e, fresh=0.1)}, {b.name}: {self.operand(e, fresh=0.1)}}}"
        r = rng.random()
        if r < 0.55:
            if kind == Kind.STR and rng.random() < 0.35:
                return rng.choice(['""', "''", "str()"])
            return self.literal(kind, elem)
        lists = self.vars_of(Kind.LIST)
        strs = self.vars_of(Kind.STR)
        if kind == Kind.INT:
            sized = self.vars_of(Kind.LIST, Kind.STR, Kind.SET, Kind.DICT)
            options = [f"len({self.pick(sized).name})"] if sized else []
            ints = self.vars_of(Kind.INT)
            if ints:
                options.append(f"{self.pick(ints).name} {rng.choice(['+', '-', '*', '//'])} {self.number()}")
            int_lists = self.vars_of(Kind.LIST, elem=Kind.INT)
            if int_lists:
                options.append(f"{rng.choice(['sum', 'max', 'min'])}({self.pick(int_lists).name})")
            if ints and rng.random() < 0.3:
                x = self.pick(ints).name
                options.append(f"{x} if {x} > {self.number()} else {self.number()}")
            return rng.choice(options) if options else self.number()
        if kind == Kind.FLOAT:
            nums = self.vars_of(Kind.INT, Kind.FLOAT)
            if nums and rng.random() < 0.6:
                x = self.pick(nums).name
                return rng.choice([f"{x} / {rng.choice(['2', '3', '10', '100'])}", f"float({x})", f"{x} * 1.5",
                                   f"round({x} / 3, 2)"])
            self.imports.add("math" if rng.random() < 0.5 else "random")
            return "math.pi" if "math" in self.imports and rng.random() < 0.5 else "random.random()"
        if kind == Kind.STR:
            options = []
            if strs:
                s = self.pick(strs).name
                options += [f"{s}.strip()", f"{s}.upper()", f"{s}.lower()", f"{s}.replace({self.string()}, {self.string()})",
                            f"{s} + {self.string()}"]
            str_lists = self.vars_of(Kind.LIST, elem=Kind.STR)
            if str_lists and rng.random() < 0.5:
                options.append(f"{rng.choice(SEPARATORS)}.join({self.pick(str_lists).name})")
            elif lists and rng.random() < 0.3:
                options.append(f"str({self.pick(lists).name})")
            nums = self.vars_of(Kind.INT, Kind.FLOAT)
            if nums:
                x = self.pick(nums)
                options += [f"str({x.name})", self.fstring([x])]
                if x.kind == Kind.INT:
                    options.append(f"{self.string()} if {x.name} > {self.number()} else {self.string()}")
            options.append(self.fstring(self.some_vars(2)))
            return rng.choice(options)
        if kind == Kind.BOOL:
            return self.condition()
        if kind == Kind.LIST:
            options = []
            if strs and elem == Kind.STR:
                s = self.pick(strs).name
                q = self.quote()
                options += [f"{s}.split()", f"{s}.split({q},{q})"]
            src = self.vars_of(Kind.LIST, Kind.SET, elem=elem)
            if src:
                s = self.pick(src).name
                x = rng.choice(ITEM_NAMES)
                body = {Kind.INT: [f"{x} * 2", f"{x} + 1", x], Kind.STR: [f"{x}.strip()", f"{x}.upper()", x],
                        Kind.FLOAT: [f"round({x}, 1)", x]}.get(elem, [x])
                cond = rng.choice(["", "", f" if {x}"] + ([f" if {x} > {self.number()}"] if elem in (Kind.INT, Kind.FLOAT)
                                                          else []))
                key = {Kind.INT: [f"-{x}", f"abs({x})", f"{x} % 10"], Kind.STR: [f"len({x})", f"{x}.lower()", f"{x}[0]"],
                       Kind.FLOAT: [f"-{x}", f"round({x})"]}.get(elem, [x])
                options += [f"[{rng.choice(body)} for {x} in {s}{cond}]", f"sorted({s})", f"list({s})",
                            f"sorted({s}, key=lambda {x}: {rng.choice(key)})"]
            if elem == Kind.INT and rng.random() < 0.3:
                options.append(f"list(range({self.operand(Kind.INT)}))")
            return rng.choice(options) if options else self.literal(kind, elem)
        if kind == Kind.SET:
            src = self.vars_of(Kind.LIST, elem=elem)
            sets = self.vars_of(Kind.SET, elem=elem)
            options = []
            if src:
                s = self.pick(src).name
                x = rng.choice(ITEM_NAMES)
                options += [f"set({s})", f"{{{x} for {x} in {s}}}"]
            if len(sets) >= 2:
                a, b = rng.sample(sets, 2)
                options.append(f"{a.name} {rng.choice(['|', '&', '-'])} {b.name}")
            return rng.choice(options) if options else self.literal(kind, elem)
        if kind == Kind.DICT:
            src = self.vars_of(Kind.LIST, elem=Kind.STR)
            options = []
            if src:
                s = self.pick(src).name
                x = rng.choice(["word", "name", "key", "item"])
                if elem == Kind.INT:
                    options.append(f"{{{x}: len({x}) for {x} in {s}}}")
                elif elem == Kind.STR:
                    options.append(f"{{{x}: {x}.upper() for {x} in {s}}}")
            strs_alive = [v for v in strs if v.name.isidentifier()]
            if len(strs_alive) >= 2 and elem is not None:
                a, b = rng.sample(strs_alive, 2)
                options += [f"{{{a.name}: {self.operand(elem)}, {b.name}: {self.operand(elem)}}}"] * 3
            return rng.choice(options) if options else self.literal(kind, elem)
        return self.literal(kind, elem)

    def some_vars(self, n: int) -> list[Var]:
        printable = [v for v in self.scope.values() if v.kind in (Kind.INT, Kind.FLOAT, Kind.STR, Kind.LIST, Kind.BOOL)]
        if not printable:
            return []
        return [self.pick(printable) for _ in range(self.rng.randint(1, n))]

    def fstring(self, vs: list[Var]) -> str:
        q = self.quote()
        parts = [self.rng.choice(["", f"{self.word()}: ", f"{self.word()} "])]
        for v in vs:
            field_ = f"{{{v.name}:.2f}}" if v.kind == Kind.FLOAT and self.rng.random() < 0.5 else \
                f"{{len({v.name})}}" if v.kind == Kind.LIST and self.rng.random() < 0.5 else f"{{{v.name}}}"
            parts.append(field_ + self.rng.choice(["", " ", ", ", f" {self.word()} "]))
        text = "".join(parts).rstrip() or self.word()
        return f"f{q}{text}{q}" if vs else f"{q}{text}{q}"

    def condition(self) -> str:
        """A test built from what is in scope, as its types allow."""
        rng = self.rng
        options: list[str] = []
        for v in rng.sample(list(self.scope.values()), min(4, len(self.scope))):
            n = v.name
            if v.kind in (Kind.INT, Kind.FLOAT):
                options += [f"{n} > {self.number()}", f"{n} < {self.operand(v.kind)}", f"{n} >= {self.number()}",
                            f"{n} == {self.number()}", f"{n} % 2 == 0" if v.kind == Kind.INT else f"{n} <= 1.0"]
            elif v.kind == Kind.STR:
                options += [f"{n}.startswith({self.string()})", f"not {n}", f"{n} == {self.string()}",
                            f"len({n}) > {self.number()}", f"{n}.isdigit()", f"{self.string()} in {n}"]
            elif v.kind in (Kind.LIST, Kind.SET, Kind.DICT):
                key = Kind.STR if v.kind == Kind.DICT else v.elem or Kind.INT
                options += [f"{self.operand(key)} in {n}", f"not {n}", f"len({n}) > {self.number()}",
                            f"{self.operand(key)} not in {n}", f"len({n}) == 0"]
            elif v.kind == Kind.BOOL:
                options += [n, f"not {n}", f"{n} == True", f"{n} == False", f"{n} and {self.condition_simple()}"]
            elif v.kind == Kind.NONE:
                options += [f"{n} is None", f"{n} is not None"]
            if options:
                v.uses += 1
        return rng.choice(options) if options else rng.choice(["True", f"{self.number()} > {self.number()}"])

    def condition_simple(self) -> str:
        ints = self.vars_of(Kind.INT)
        return f"{self.pick(ints).name} > {self.number()}" if ints else "True"

    # -- statements ----------------------------------------------------------------------------
    # Each returns lines indented relative to the block they are in.

    @staticmethod
    def indent(lines: list[str]) -> list[str]:
        return ["    " + line if line else line for line in lines]

    def define(self, kind: Kind | None = None, elem: Kind | None = None) -> list[str]:
        rng = self.rng
        if kind is None:
            kinds = dict(KIND_WEIGHTS)
            if self.classes:
                kinds[Kind.INSTANCE] = 2.5
            kinds[Kind.FUNCTION] = 1.5
            kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        if kind == Kind.INSTANCE:
            return self.instantiate()
        if kind == Kind.FUNCTION:
            x = rng.choice(["x", "n", "item", "w", "pair"])
            body = rng.choice([f"{x} * 2", f"{x} + 1", f"{x}[1]", f"len({x})", f"{x}.strip()", f"-{x}"])
            return [f"{self.bind(self.name_for(kind), kind).name} = lambda {x}: {body}"]
        if elem is None and kind in ELEMENTS:
            elem = rng.choice(ELEMENTS[kind])
            if kind == Kind.LIST and rng.random() < 0.15:
                elem = Kind.LIST
        value = self.value(kind, elem)
        return [f"{self.bind(self.name_for(kind, elem), kind, elem).name} = {value}"]

    def instantiate(self) -> list[str]:
        cls = self.rng.choice(self.classes)
        init = cls.methods[0]
        args = [self.operand(p.kind, p.elem) for p in init.params]
        optional = [p for p in init.params if p.name in init.defaults]
        if optional and self.rng.random() < 0.5:  # keyword arguments for some defaults
            args = args[:len(init.params) - len(optional)]
            args += [f"{p.name}={self.operand(p.kind, p.elem)}" for p in optional if self.rng.random() < 0.6]
        name = self.bind(self.name_for(Kind.INSTANCE, cls=cls), Kind.INSTANCE, cls=cls).name
        return [f"{name} = {cls.name}({', '.join(args)})"]

    def sub(self, depth: int, n_lo: int = 1, n_hi: int = 2, in_loop: bool = False, in_func: bool = False,
            allow_control: bool = True) -> list[str]:
        """A nested block (a branch, a loop body), indented; names it binds end with it."""
        return self.indent(self.scoped(lambda: self.block(depth, n_lo, n_hi, in_loop, in_func, allow_control)))

    def scoped(self, make) -> list[str]:
        """Run `make`; names it binds are forgotten afterwards (they may not exist on every path)."""
        before = set(self.scope)
        lines = make()
        for name in [n for n in self.scope if n not in before]:
            del self.scope[name]
        return lines

    def new_var(self, kind: Kind, elem: Kind | None = None) -> str:
        return self.bind(self.name_for(kind, elem), kind, elem).name

    def use(self, var: Var, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """One statement that uses `var` as what it holds (options are built only once chosen)."""
        rng, n, k = self.rng, var.name, var.kind
        var.uses += 1
        nested = depth < 3
        if k in SIGNATURE_USE and rng.random() < SIGNATURE_SHARE:
            return [self.signature_use(var)]
        body = lambda: self.sub(depth + 1, 1, 2, in_loop, in_func)  # noqa: E731
        if k in (Kind.INT, Kind.FLOAT):
            def other() -> str:
                o = self.operand(k, fresh=0.6)
                return self.number() if o == n else o
            options = [lambda: [f"{n} += {rng.choice(['1', other()])}"], lambda: [f"{n} -= {rng.choice(['1', other()])}"],
                       lambda: [f"{n} *= {rng.choice(['2', '3'])}"], lambda: [f"{n} = {n} + {other()}"],
                       lambda: [f"{n} = max({n}, {other()})"], lambda: [f"print({self.fstring([var])})"]]
            if k == Kind.INT:
                options.append(lambda: [f"{n} //= 2"])
                if nested:
                    options.append(lambda: self.scoped(lambda: [
                        f"for {self.bind(self.loop_name(Kind.INT), Kind.INT).name} in range({n}):"]
                        + self.indent(self.block(depth + 1, 1, 2, True, in_func))))
            else:
                options.append(lambda: [f"{n} = round({n}, 2)"])
        elif k == Kind.STR:
            options = [lambda: [f"{n} += {self.operand(Kind.STR, fresh=0.5)}"], lambda: [f"{n} += {self.string()}"],
                       lambda: [f"{n} += {self.fstring(self.some_vars(1))}"],
                       lambda: [f"{n} = {n}.{rng.choice(['upper', 'lower', 'strip', 'title'])}()"],
                       lambda: [f"{n} = {n}.replace({self.string()}, {self.string()})"], lambda: [f"print({n})"],
                       lambda: [f"{self.new_var(Kind.LIST, Kind.STR)} = {n}.split()"]]
            if nested:
                options.append(lambda: [f"if {n}.startswith({self.string()}):"] + body())
        elif k == Kind.LIST:
            e = var.elem or Kind.INT
            options = [lambda: [f"{n}.append({self.operand(e)})"], lambda: [f"{n}.append({self.operand(e)})"],
                       lambda: [f"{n}.insert(0, {self.operand(e)})"], lambda: [f"print(len({n}))"],
                       lambda: [f"{self.new_var(e)} = {n}[{rng.choice(['0', '-1', '0', '1'])}]"]]
            same = [v for v in self.vars_of(Kind.LIST, elem=e) if v is not var]
            if same:
                options.append(lambda: [f"{n}.extend({self.pick(same).name})"])
            if e in (Kind.INT, Kind.STR, Kind.FLOAT):
                options.append(lambda: [f"{n}.sort()" if rng.random() < 0.7 else f"{n}.sort(reverse=True)"])
            if e == Kind.INT:
                options.append(lambda: [f"{self.new_var(Kind.INT)} = sum({n})"])
            if nested:
                options += [lambda: self.for_over(var, depth, in_func)] * 2
                options.append(lambda: [f"if {self.operand(e)} in {n}:"] + (
                    self.indent([f"{n}.remove({self.operand(e, fresh=1.0)})"]) if rng.random() < 0.3 else body()))
        elif k == Kind.SET:
            e = var.elem or Kind.INT
            options = [lambda: [f"{n}.add({self.operand(e)})"], lambda: [f"{n}.add({self.operand(e)})"],
                       lambda: [f"{n}.discard({self.operand(e)})"], lambda: [f"print(len({n}))"],
                       lambda: [f"{n}.update({self.operand(Kind.LIST, e)})"]]
            others = [v for v in self.vars_of(Kind.SET, elem=e) if v is not var]
            if others:
                options += [lambda: [f"{n} |= {self.pick(others).name}"],
                            lambda: [f"{n} = {n} | {self.pick(others).name}"],
                            lambda: [f"{self.new_var(Kind.SET, e)} = {n} & {self.pick(others).name}"]]
            if nested:
                options += [lambda: [f"if {self.operand(e)} in {n}:"] + body(),
                            lambda: [f"if {self.operand(e)} not in {n}:"] + self.indent(
                                [f"{n}.add({self.operand(e)})"]) + self.sub(depth + 1, 0, 1, in_loop, in_func),
                            lambda: self.for_over(var, depth, in_func)]
        elif k == Kind.DICT:
            e = var.elem or Kind.INT
            key = lambda: self.operand(Kind.STR, fresh=0.5)  # noqa: E731
            options = [lambda: [f"{n}[{key()}] = {self.operand(e)}"], lambda: [f"{n}[{key()}] = {self.operand(e)}"],
                       lambda: [f"{self.new_var(e)} = {n}.get({key()}"
                                f"{', ' + self.literal(e) if rng.random() < 0.6 else ''})"],
                       lambda: [f"{n}.pop({key()}, None)"], lambda: [f"print({n})"]]
            if e == Kind.INT:
                options.append(lambda: (lambda kk: [f"{n}[{kk}] = {n}.get({kk}, 0) + 1"])(key()))
            if e == Kind.LIST:
                options.append(lambda: [f"{n}.setdefault({key()}, []).append({self.operand(Kind.INT)})"])
            if nested:
                options += [lambda: self.for_over(var, depth, in_func), lambda: [f"if {key()} in {n}:"] + body()]
        elif k == Kind.BOOL:
            options = [lambda: [f"{n} = not {n}"], lambda: [f"print({n})"], lambda: [f"{n} = {self.condition()}"]]
            if nested:
                options.append(lambda: [f"if {rng.choice([n, f'not {n}', f'{n} == True', f'{n} == False'])}:"] + body())
        elif k == Kind.INSTANCE and var.cls is not None:
            return self.use_instance(var, depth, in_loop, in_func)
        elif k == Kind.FUNCTION:
            lists = self.vars_of(Kind.LIST)
            if lists:
                src = self.pick(lists)
                return [f"{self.new_var(Kind.LIST, src.elem)} = sorted({src.name}, key={n})"]
            return [f"print({n}({self.number()}))"]
        elif k == Kind.NONE:
            return [f"if {n} is None:", f"    {n} = {self.number()}"]
        else:
            return [f"print({n})"]
        return rng.choice(options)()

    def signature_use(self, var: Var) -> str:
        """The statement only this type takes, starting with the name: what a lookup of the binding predicts."""
        n, e = var.name, var.elem or Kind.INT
        if var.kind == Kind.SET:
            return f"{n}.add({self.operand(e)})"
        if var.kind == Kind.LIST:
            return f"{n}.append({self.operand(e)})"
        if var.kind == Kind.DICT:
            return f"{n}[{self.operand(Kind.STR, fresh=0.5)}] = {self.operand(e)}"
        if var.kind == Kind.STR:
            return f"{n} += {self.rng.choice([self.operand(Kind.STR, fresh=0.5), self.string()])}"
        return f"{n} += {self.rng.choice(['1', self.operand(var.kind, fresh=0.6)])}"

    def use_instance(self, var: Var, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        rng, cls = self.rng, var.cls
        methods = cls.methods[1:]
        if methods and rng.random() < 0.7:
            m = rng.choice(methods)
            call = f"{var.name}.{m.name}({', '.join(self.operand(p.kind, p.elem) for p in m.params if p.name not in m.defaults)})"
            if m.returns is None:
                return [call]
            if m.returns == Kind.BOOL and depth < 3:
                return [f"if {call}:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
            return [f"{self.bind(self.name_for(m.returns, m.ret_elem), m.returns, m.ret_elem).name} = {call}"]
        attr = rng.choice(cls.attrs)
        proxy = Var(f"{var.name}.{attr.name}", attr.kind, attr.elem, uses=1, born=self.clock)
        if attr.kind in (Kind.INT, Kind.FLOAT, Kind.STR, Kind.LIST, Kind.SET, Kind.DICT):
            return self.use(proxy, depth, in_loop, in_func)
        return [f"print({proxy.name})"]

    def for_over(self, var: Var, depth: int, in_func: bool) -> list[str]:
        """A loop over a container; the body uses the loop variable as what its items are."""
        return self.scoped(lambda: self._for_over(var, depth, in_func))

    def _for_over(self, var: Var, depth: int, in_func: bool) -> list[str]:
        rng, n = self.rng, var.name
        if var.kind == Kind.DICT:
            k, v = rng.choice([("key", "value"), ("name", "count"), ("k", "v"), (self.noun(), "amount")])
            k = self.fresh([k], Kind.STR)
            v = self.fresh([v], var.elem or Kind.INT)
            if k == v:
                v = self.name_for(var.elem or Kind.INT)
            head = rng.choice([f"for {k}, {v} in {n}.items():", f"for {k} in {n}:"])
            self.bind(k, Kind.STR)
            if ", " in head:
                self.bind(v, var.elem or Kind.INT, None)
            return [head] + self.indent(self.loop_body(self.scope[k] if ", " not in head else self.scope[v],
                                                       depth, in_func, n))
        e = var.elem or (Kind.STR if var.kind == Kind.STR else Kind.INT)
        x = self.loop_name(e)
        r = rng.random()
        if var.kind == Kind.LIST and r < 0.4:
            i = self.fresh(["i", "idx", "index", "pos"], Kind.INT)
            head = f"for {i}, {x} in enumerate({n}):"
            self.bind(i, Kind.INT)
        elif var.kind == Kind.LIST and r < 0.55:
            i = self.fresh(["i", "j", "idx"], Kind.INT)
            self.bind(i, Kind.INT)
            body = [f"{self.bind(x, e).name} = {n}[{i}]"] + self.loop_body(self.scope[x], depth, in_func, n)
            return [f"for {i} in range(len({n})):"] + self.indent(body)
        elif var.kind == Kind.SET and r < 0.4:
            head = f"for {x} in sorted({n}):"
        else:
            head = f"for {x} in {n}:"
        loop_var = self.bind(x, e, Kind.INT if e == Kind.LIST else None)
        return [head] + self.indent(self.loop_body(loop_var, depth, in_func, n))

    def loop_name(self, elem: Kind) -> str:
        return self.fresh({Kind.STR: ["word", "name", "line", "part", "w", "s", self.noun()],
                           Kind.INT: ["n", "x", "num", "value", "i", "number"],
                           Kind.FLOAT: ["x", "price", "value", "amount"],
                           Kind.LIST: ["row", "pair", "group", "chunk"]}.get(elem, ITEM_NAMES), elem)

    def fresh(self, options: list[str], kind: Kind) -> str:
        """One of `options` that is not a live name (a loop never clobbers one), else a new name."""
        name = self.rng.choice(options)
        if name in self.scope or name in RESERVED or name in self.constants:
            name = self.name_for(kind)
        return name

    def absorb(self, x: Var, accs: list[Var]) -> list[str]:
        """Statements that put loop variable x into accumulators whose type takes it."""
        out = []
        for acc in accs:
            n, e = acc.name, x.kind
            acc.uses += 1
            if acc.kind == Kind.SET and acc.elem == e:
                out.append(f"{n}.add({x.name})")
            elif acc.kind == Kind.LIST and acc.elem == e:
                out.append(f"{n}.append({x.name})")
            elif acc.kind == Kind.STR:
                piece = x.name if e == Kind.STR else f"str({x.name})"
                if self.rng.random() < 0.3:
                    piece += " + " + self.rng.choice(SEPARATORS + ['"\\n"'])
                out.append(f"{n} += {piece}")
            elif acc.kind in (Kind.INT, Kind.FLOAT) and e in (Kind.INT, Kind.FLOAT) and not (acc.kind == Kind.INT and e == Kind.FLOAT):
                out.append(f"{n} += {x.name}")
            elif acc.kind == Kind.INT:
                out.append(f"{n} += 1")
            elif acc.kind == Kind.DICT and e == Kind.STR:
                out.append(f"{n}[{x.name}] = {n}.get({x.name}, 0) + 1" if acc.elem == Kind.INT else
                           f"{n}[{x.name}] = {self.operand(acc.elem or Kind.INT)}")
        return out

    def takers(self, x: Var, source: str) -> list[Var]:
        """Variables bound before loop variable x that could take it (not the container looped over)."""
        e = x.kind
        return [v for v in self.scope.values() if v is not x and v.born < x.born and v.name != source and (
            (v.kind in (Kind.SET, Kind.LIST) and v.elem == e) or v.kind == Kind.STR and e == Kind.STR
            or v.kind in (Kind.INT, Kind.FLOAT) and e in (Kind.INT, Kind.FLOAT) and not (v.kind == Kind.INT and e == Kind.FLOAT)
            or v.kind == Kind.DICT and e == Kind.STR)]

    def loop_body(self, x: Var, depth: int, in_func: bool, source: str = "") -> list[str]:
        rng = self.rng
        body: list[str] = []
        takers = self.takers(x, source)
        if takers and rng.random() < 0.8:
            accs = rng.sample(takers, min(len(takers), rng.choice([1, 1, 2, 2, 3])))
            lines = self.absorb(x, accs)
            if rng.random() < 0.35 and x.kind in (Kind.INT, Kind.FLOAT, Kind.STR):
                test = (f"{x.name} > {self.number()}" if x.kind != Kind.STR else
                        rng.choice([f"{x.name}", f"not {x.name}.startswith({self.string()})", f"len({x.name}) > 2"]))
                lines = [f"if {test}:"] + self.indent(lines)
            body += lines
        else:
            x.uses += 1
            body += self.use(x, depth + 1, True, in_func) if x.kind != Kind.STR or rng.random() < 0.5 else \
                [f"print({x.name})"]
        if rng.random() < 0.4:
            body += self.block(depth + 1, 1, 1, True, in_func)
        return body

    def accumulate(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """Accumulators of one or several types, filled in one loop, then used."""
        rng = self.rng
        def flat() -> list[Var]:
            return [v for v in self.vars_of(Kind.LIST, Kind.SET) if v.elem in (Kind.INT, Kind.STR, Kind.FLOAT)]
        sources = flat()
        lines: list[str] = []
        if not sources:
            lines += self.define(Kind.LIST, rng.choice([Kind.INT, Kind.STR]))
            sources = flat()
        src = self.pick(sources)
        e = src.elem or Kind.INT
        kinds = {Kind.STR: [Kind.SET, Kind.STR, Kind.LIST, Kind.DICT, Kind.INT],
                 Kind.INT: [Kind.SET, Kind.LIST, Kind.INT, Kind.STR], Kind.FLOAT: [Kind.FLOAT, Kind.LIST, Kind.STR]}[e]
        accs = []
        for kind in rng.sample(kinds, rng.choice([1, 2, 2, 3])):
            init = {Kind.SET: "set()", Kind.STR: rng.choice(['""', "''", "str()"]), Kind.LIST: "[]",
                    Kind.DICT: "{}", Kind.INT: "0", Kind.FLOAT: "0.0"}[kind]
            name = self.name_for(kind, e)
            accs.append(self.bind(name, kind, e if kind in (Kind.SET, Kind.LIST) else Kind.INT if kind == Kind.DICT else None))
            lines.append(f"{name} = {init}")
        if rng.random() < 0.3:  # something else happens between the definitions and the loop
            lines += self.block(depth, 1, 2, in_loop, in_func, allow_control=False)
        x = self.bind(self.loop_name(e), e)
        x.uses += 1
        body = self.absorb(x, rng.sample(accs, len(accs)))
        if rng.random() < 0.3:
            test = f"{x.name} > {self.number()}" if e != Kind.STR else rng.choice([x.name, f"len({x.name}) > 3"])
            body = [f"if {test}:"] + self.indent(body)
        if src.kind == Kind.LIST and rng.random() < 0.25:
            i = self.fresh(["i", "idx", "n", "pos"], Kind.INT)
            lines += [f"for {i}, {x.name} in enumerate({src.name}):"] + self.indent(body)
        else:
            lines += [f"for {x.name} in {src.name}:"] + self.indent(body)
        del self.scope[x.name]
        if rng.random() < 0.6:  # and read afterwards
            acc = rng.choice(accs)
            lines += self.use(acc, depth, in_loop, in_func) if rng.random() < 0.6 else [f"print({acc.name})"]
        return lines

    def for_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        iterables = self.vars_of(Kind.LIST, Kind.SET, Kind.DICT)
        if iterables and self.rng.random() < 0.75:
            return self.for_over(self.pick(iterables), depth, in_func)
        i = self.loop_name(Kind.INT)
        count = self.operand(Kind.INT, fresh=0.5)
        head = self.rng.choice([f"for {i} in range({count}):", f"for {i} in range(1, {count}):"])
        return [head] + self.indent(self.scoped(lambda: self.loop_body(self.bind(i, Kind.INT), depth, in_func)))

    def while_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        rng = self.rng
        if rng.random() < 0.5:
            body = self.scoped(lambda: self.block(depth + 1, 1, 2, True, in_func)
                               + [f"if {self.condition()}:", "    break"])
            return ["while True:"] + self.indent(body)
        lists = [v for v in self.vars_of(Kind.LIST) if v.elem in (Kind.INT, Kind.STR)]
        if lists and rng.random() < 0.35:  # drain a list: `while items:` ... `x = items.pop()`

            def drain() -> list[str]:
                src = self.pick(lists)
                x = self.bind(self.loop_name(src.elem), src.elem)
                return [f"while {src.name}:", f"    {x.name} = {src.name}.pop()"] + \
                    self.indent(self.loop_body(x, depth, in_func, src.name))
            return self.scoped(drain)
        ints = self.vars_of(Kind.INT)
        lines = []
        if not ints:
            lines += self.define(Kind.INT)
            ints = self.vars_of(Kind.INT)
        n = self.pick(ints).name
        r = rng.random()
        if r < 0.3:
            head, step = f"while {n}:", f"{n} -= 1"
        elif r < 0.6:
            head, step = f"while {n} > 0:", f"{n} -= 1"
        else:
            head, step = f"while {n} < {self.number()}:", f"{n} += 1"
        return lines + [head] + self.indent(self.scoped(lambda: self.block(depth + 1, 1, 2, True, in_func)) + [step])

    def if_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        lines = [f"if {self.condition()}:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            lines += [f"elif {self.condition()}:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
        if self.rng.random() < 0.6:
            lines += ["else:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
        return lines

    def with_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """A file opened for reading is read; one opened for writing is written."""
        rng = self.rng
        q = self.quote()
        paths = [v for v in self.vars_of(Kind.STR) if "path" in v.name or "name" in v.name]
        path = self.pick(paths).name if paths and rng.random() < 0.5 else self.path_literal()
        reading = rng.random() < 0.5
        kind = Kind.FILE_READ if reading else Kind.FILE_WRITE
        mode = rng.choice(["", f", {q}r{q}", f", {q}r{q}"]) if reading else f", {q}{rng.choice(['w', 'w', 'a'])}{q}"
        f = self.name_for(kind)
        handle = self.bind(f, kind)
        if reading:
            r = rng.random()
            if r < 0.4:
                target = self.bind(self.name_for(Kind.STR), Kind.STR)
                body = [f"{target.name} = {f}.{rng.choice(['read()', 'read().strip()', 'readline()'])}"]
            elif r < 0.7:
                target = self.bind(self.name_for(Kind.LIST, Kind.STR), Kind.LIST, Kind.STR)
                body = [f"{target.name} = {f}.{rng.choice(['readlines()', 'read().splitlines()', 'read().split()'])}"]
            else:
                def read_lines() -> list[str]:
                    line = self.bind(self.loop_name(Kind.STR), Kind.STR)
                    return [f"for {line.name} in {f}:"] + self.indent(self.loop_body(line, depth + 1, in_func))
                body = self.scoped(read_lines)
        else:
            vs = self.some_vars(2)
            body = [f"{f}.write({rng.choice([self.fstring(vs) if vs else self.string(), self.operand(Kind.STR)])})"]
            items = self.vars_of(Kind.LIST)
            if items and rng.random() < 0.5:
                lst = self.pick(items)
                x = self.loop_name(lst.elem or Kind.INT)
                body = [f"for {x} in {lst.name}:", f"    {f}.write(f{q}{{{x}}}\\n{q})"]
        handle.uses += 1
        del self.scope[f]  # closed when the block ends
        if rng.random() < 0.35:  # the open / close form
            return [f"{f} = open({path}{mode})"] + body + [f"{f}.close()"]
        return [f"with open({path}{mode}) as {f}:"] + self.indent(body)

    def try_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        rng = self.rng
        err = rng.choice(["ValueError", "KeyError", "IndexError", "TypeError", "Exception", "OSError",
                          "ZeroDivisionError"])
        q = self.quote()
        handler = rng.choice([[f"print({self.string()})"], ["pass"], [f"print(f{q}error: {{e}}{q})"],
                              ["continue"] if in_loop else ["pass"]])
        as_e = " as e" if "{e}" in handler[0] else ""
        return (["try:"] + self.sub(depth + 1, 1, 2, in_loop, in_func) +
                [f"except {err}{as_e}:"] + self.indent(handler))

    def flag(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """A bool set in a loop when something is found, then tested: `found = False` ... `found = True` ...
        `if found == True:` (or `if found:` / `if not found:`)."""
        rng = self.rng
        sources = [v for v in self.vars_of(Kind.LIST, Kind.SET) if v.elem in (Kind.INT, Kind.STR)]
        if not sources:
            return self.define(Kind.LIST, rng.choice([Kind.INT, Kind.STR]))
        src = self.pick(sources)
        flag = self.bind(self.name_for(Kind.BOOL), Kind.BOOL)
        start = rng.choice(["False", "False", "True"])
        lines = [f"{flag.name} = {start}"]

        def loop() -> list[str]:
            x = self.bind(self.loop_name(src.elem), src.elem)
            test = f"{x.name} == {self.operand(src.elem, fresh=0.5)}" if rng.random() < 0.5 else \
                (f"{x.name} > {self.number()}" if src.elem == Kind.INT else rng.choice([f"not {x.name}",
                                                                                        f"len({x.name}) > 3"]))
            hit = [f"{flag.name} = {'True' if start == 'False' else 'False'}"] + (["break"] if rng.random() < 0.5 else [])
            return [f"for {x.name} in {src.name}:", f"    if {test}:"] + self.indent(self.indent(hit))
        lines += self.scoped(loop)
        head = rng.choice([f"{flag.name} == True", f"{flag.name} == True", f"{flag.name}", f"not {flag.name}",
                           f"{flag.name} == False"])
        flag.uses += 1
        lines += [f"if {head}:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
        if rng.random() < 0.4:
            lines += ["else:"] + self.sub(depth + 1, 1, 1, in_loop, in_func)
        return lines

    def swap(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """`a, b = b, a` between two names of one type; both are used again."""
        by_kind: dict[Kind, list[Var]] = {}
        for v in self.scope.values():
            if v.kind in (Kind.INT, Kind.STR, Kind.FLOAT, Kind.LIST):
                by_kind.setdefault((v.kind, v.elem), []).append(v)
        pairs = [vs for vs in by_kind.values() if len(vs) >= 2]
        if not pairs:
            return self.define()
        a, b = self.rng.sample(self.rng.choice(pairs), 2)
        lines = [f"{a.name}, {b.name} = {b.name}, {a.name}"]
        if self.rng.random() < 0.6:
            lines.append(f"print({self.fstring([a, b])})")
        return lines

    def unpack(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        rng = self.rng
        lists = [v for v in self.vars_of(Kind.LIST) if v.elem in (Kind.INT, Kind.STR, Kind.FLOAT)]
        ints = self.vars_of(Kind.INT)
        if lists and rng.random() < 0.5:
            src = self.pick(lists)
            a, b = self.bind(self.name_for(src.elem), src.elem), self.bind(self.name_for(src.elem), src.elem)
            return [f"{a.name}, {b.name} = {src.name}[0], {src.name}[-1]"]
        if ints and rng.random() < 0.5:
            n = self.pick(ints).name
            q, r = self.bind(self.name_for(Kind.INT), Kind.INT), self.bind(self.name_for(Kind.INT), Kind.INT)
            return [f"{q.name}, {r.name} = divmod({n}, {rng.choice(['2', '10', '60'])})"]
        k1, k2 = rng.sample([Kind.INT, Kind.STR, Kind.FLOAT, Kind.BOOL], 2)
        a, b = self.name_for(k1), None
        va = self.literal(k1)
        self.bind(a, k1)
        b = self.name_for(k2)
        self.bind(b, k2)
        return [f"{a}, {b} = {va}, {self.literal(k2)}"]

    def print_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        vs = self.some_vars(2)
        arg = self.rng.choice([self.fstring(vs), self.fstring(vs), self.string(), self.string()] +
                              ([f"{self.string()}, {vs[0].name}"] if vs else []))
        keys = [v for v in self.scope.values() if v.kind in (Kind.INT, Kind.STR) and v.name.isidentifier()]
        if len(keys) >= 2 and self.rng.random() < 0.2:  # a dict literal keyed by names: `{name: count, total: n}`
            a, b = self.rng.sample(keys, 2)
            arg = f"{{{a.name}: {self.pick(list(self.scope.values())).name}, {b.name}: {self.number()}}}"
        fn = self.rng.choice(["print", "print", "print", "logging.info"])
        if fn == "logging.info":
            self.imports.add("logging")
        return [f"{fn}({arg})"]

    def comment(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        verb = self.rng.choice(synthetic_v1.VERBS)
        return [f"# {verb} the {self.rng.choice([self.noun(), self.plural(self.noun())])}"]

    def assert_stmt(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        return [f"assert {self.condition()}"]

    def call_function(self, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        """Call a function this program defined, with arguments of its parameters' types, and use its result."""
        rng = self.rng
        fn = rng.choice(self.functions)
        required = [p for p in fn.params if p.name not in fn.defaults]
        args = [self.operand(p.kind, p.elem, fresh=0.2) if p.kind != Kind.STR or "path" not in p.name
                and "name" not in p.name else (self.operand(Kind.STR, fresh=0.4) if rng.random() < 0.3
                                               else self.path_literal()) for p in required]
        for p in fn.params:
            if p.name in fn.defaults and rng.random() < 0.3:
                args.append(f"{p.name}={self.operand(p.kind, p.elem)}")
        call = f"{fn.name}({', '.join(args)})"
        if fn.returns is None or fn.returns == Kind.NONE:
            return [call]
        if fn.returns == Kind.BOOL and depth < 3 and rng.random() < 0.5:
            return [f"if {call}:"] + self.sub(depth + 1, 1, 2, in_loop, in_func)
        var = self.bind(self.name_for(fn.returns, fn.ret_elem), fn.returns, fn.ret_elem)
        lines = [f"{var.name} = {call}"]
        if rng.random() < 0.7:
            lines += self.use(var, depth, in_loop, in_func)
        return lines

    def statement(self, depth: int, in_loop: bool = False, in_func: bool = False,
                  allow_control: bool = True) -> list[str]:
        self.clock += 1
        rng = self.rng
        alive = [v for v in self.scope.values() if v.kind != Kind.NONE]
        # [ours] Weights: the type-decided uses dominate (issue 26), and every idiom of version 1 stays at
        # least as frequent per character as it was there (docs/results.md).
        choices: list[tuple] = [("define", 8 if len(alive) < 2 else 2.5 if len(alive) < 6 else 1.2), ("print", 2.5),
                                ("comment", 0.4)]
        if alive:
            choices += [("use", 8), ("swap", 2.0), ("unpack", 0.3), ("assert", 0.2)]
        if self.functions:
            choices.append(("call", 1.5))
        if depth < 3 and allow_control:
            choices += [("accumulate", 4.0), ("for", 2.0), ("if", 4.5), ("while", 2.0), ("with", 1.8), ("try", 0.5),
                        ("flag", 2.5)]
        if in_loop:
            choices += [("break", 0.15), ("continue", 0.15)]
        what = rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
        if what == "use":
            return self.use(self.pick(alive), depth, in_loop, in_func)
        if what == "define":
            return self.define()
        if what in ("break", "continue"):
            return [what]
        return {"print": self.print_stmt, "comment": self.comment, "swap": self.swap, "unpack": self.unpack,
                "assert": self.assert_stmt, "call": self.call_function, "accumulate": self.accumulate,
                "for": self.for_stmt, "if": self.if_stmt, "while": self.while_stmt, "with": self.with_stmt,
                "try": self.try_stmt, "flag": self.flag}[what](depth, in_loop, in_func)

    def block(self, depth: int, n_lo: int = 1, n_hi: int = 3, in_loop: bool = False, in_func: bool = False,
              allow_control: bool = True) -> list[str]:
        lines: list[str] = []
        start = self.clock
        for _ in range(self.rng.randint(n_lo, n_hi)):
            lines += self.statement(depth, in_loop, in_func, allow_control)
        if depth <= 1:  # a function body or a script: what it bound is used, not left lying
            for var in [v for v in self.scope.values() if v.born > start and v.uses == 0 and v.kind != Kind.NONE]:
                if self.rng.random() < 0.7:
                    self.clock += 1
                    lines += self.use(var, depth, in_loop, in_func)
        if n_lo > 0 and all(line.lstrip().startswith("#") for line in lines):
            lines.append("pass")  # a block needs a statement, not only comments
        return lines

    # -- definitions ---------------------------------------------------------------------------

    def docstring(self, what: str) -> list[str]:
        q = self.rng.choice(['"""', '"""', "'''"])
        return [f"{q}{what[0].upper()}{what[1:]}.{q}"]

    def param_list(self, params: list[Var], defaults: dict[str, str], method: bool, annotate: bool) -> str:
        parts = ["self"] if method else []
        names = {Kind.INT: "int", Kind.FLOAT: "float", Kind.STR: "str", Kind.BOOL: "bool", Kind.LIST: "list",
                 Kind.DICT: "dict", Kind.SET: "set"}
        for p in params:
            text = p.name + (f": {names[p.kind]}" if annotate and p.kind in names else "")
            if p.name in defaults:
                text += (" = " if annotate and p.kind in names else "=") + defaults[p.name]
            parts.append(text)
        return ", ".join(parts)

    def new_params(self, kinds: list[tuple[Kind, Kind | None]], n_default: int) -> tuple[list[Var], dict[str, str]]:
        params: list[Var] = []
        for kind, elem in kinds:
            name = self.fresh(PATH_NAMES, kind) if kind == Kind.STR and self.rng.random() < 0.3 else \
                self.name_for(kind, elem)
            params.append(self.bind(name, kind, elem))
        defaults = {}
        for p in params[len(params) - min(n_default, len(params)):]:
            defaults[p.name] = self.rng.choice({Kind.INT: ["0", "1", "10", "None"], Kind.FLOAT: ["0.0", "1.0"],
                                                Kind.STR: ['""', "None", self.string()], Kind.BOOL: ["True", "False"],
                                                Kind.LIST: ["None"], Kind.DICT: ["None"], Kind.SET: ["None"]}[p.kind])
            if defaults[p.name] == "None":
                # A None default is replaced before use, so the name holds its type where it is used.
                p.born = -1
        return params, defaults

    def function(self) -> list[str]:
        """A function named for what it does, doing it; registered so later code can call it."""
        rng = self.rng
        outer = self.scope
        self.scope = {}
        noun = self.noun()
        plural = self.plural(noun)
        role = rng.choices(["load", "save", "count", "unique", "join", "group", "filter", "find", "check", "average",
                            "process"], weights=[1.2, 1.2, 1, 1, 1, 1, 1, 0.7, 3.0, 0.6, 1.5])[0]
        elem = Kind.STR if role in ("join", "group") else rng.choice([Kind.INT, Kind.STR])
        if role == "average":
            elem = rng.choice([Kind.INT, Kind.FLOAT])
        lines: list[str] = []
        if role == "load":
            name = rng.choice([f"load_{plural}", f"read_{noun}", f"read_{plural}", f"load_{noun}_file"])
            params, defaults = self.new_params([(Kind.STR, None)], 0)
            path = params[0].name
            q = self.quote()
            as_lines = rng.random() < 0.5
            mode = rng.choice(["", f", {q}r{q}"])
            if as_lines:
                acc = self.bind(self.name_for(Kind.LIST, Kind.STR), Kind.LIST, Kind.STR)
                body = [f"{acc.name} = []", f"with open({path}{mode}) as f:", "    for line in f:",
                        f"        {acc.name}.append(line.{rng.choice(['strip()', 'rstrip()', 'strip().lower()'])})"]
                returns, ret_elem = Kind.LIST, Kind.STR
            else:
                acc = self.bind(self.name_for(Kind.STR), Kind.STR)
                if rng.random() < 0.3:
                    body = [f"f = open({path}{mode})", f"{acc.name} = f.read()", "f.close()"]
                else:
                    body = [f"with open({path}{mode}) as f:", f"    {acc.name} = f.read()"]
                returns, ret_elem = Kind.STR, None
            body.append(f"return {acc.name}")
            what = f"read the {plural} from a file"
        elif role == "save":
            name = rng.choice([f"save_{plural}", f"write_{noun}", f"write_{plural}", f"save_{noun}_file"])
            params, defaults = self.new_params([(Kind.STR, None), (Kind.LIST, Kind.STR)], 0)
            path, items = params[0].name, params[1].name
            q = self.quote()
            mode = rng.choice(["w", "w", "a"])
            x = rng.choice(["line", "item", noun, "entry"])
            if x in (path, items):
                x = "line"
            body = [f"with open({path}, {q}{mode}{q}) as f:", f"    for {x} in {items}:",
                    f"        f.write({x} + {q}\\n{q})" if rng.random() < 0.5 else f"        f.write(f{q}{{{x}}}\\n{q})"]
            returns, ret_elem = None, None
            if rng.random() < 0.4:
                body.append(f"return len({items})")
                returns = Kind.INT
            what = f"write the {plural} to a file"
        elif role in ("count", "unique", "join", "group", "filter", "average"):
            prefix = {"count": ["count", "count"], "unique": ["unique", "collect", "distinct"],
                      "join": ["join", "format"], "group": ["group", "count_by", "index"],
                      "filter": ["filter", "select", "keep"], "average": ["average", "mean"]}[role]
            name = f"{rng.choice(prefix)}_{plural}"
            extra = [(Kind.INT, None)] if role in ("count", "filter") and elem == Kind.INT else []
            params, defaults = self.new_params([(Kind.LIST, elem)] + extra, 1 if extra and rng.random() < 0.6 else 0)
            items = params[0]
            acc_kind = {"count": Kind.INT, "unique": Kind.SET, "join": Kind.STR, "group": Kind.DICT,
                        "filter": Kind.LIST, "average": Kind.FLOAT}[role]
            acc = self.bind(self.name_for(acc_kind, elem), acc_kind, elem if acc_kind in (Kind.SET, Kind.LIST)
                            else Kind.INT if acc_kind == Kind.DICT else None)
            init = {Kind.INT: "0", Kind.SET: "set()", Kind.STR: rng.choice(['""', "''"]), Kind.DICT: "{}",
                    Kind.LIST: "[]", Kind.FLOAT: "0.0"}[acc_kind]
            body = [f"{acc.name} = {init}"]
            if rng.random() < 0.3:
                body += self.block(1, 1, 1, False, True, allow_control=False)
            x = self.bind(self.loop_name(elem), elem)
            step = self.absorb(x, [acc])
            if extra:
                step = [f"if {x.name} > {params[1].name}:"] + self.indent(step)
            body += [f"for {x.name} in {items.name}:"] + self.indent(step)
            if role == "average":
                body.append(f"return {acc.name} / len({items.name}) if {items.name} else 0.0")
                returns, ret_elem = Kind.FLOAT, None
            else:
                if rng.random() < 0.4:
                    body += self.block(1, 1, 1, False, True, allow_control=False)
                body.append(f"return {acc.name}" if acc_kind != Kind.STR or rng.random() < 0.5
                            else f"return {acc.name}.strip()")
                returns, ret_elem = acc.kind, acc.elem
            what = {"count": f"count the {plural}", "unique": f"the distinct {plural}", "join": f"the {plural} as text",
                    "group": f"count the {plural} by name", "filter": f"keep the {plural} we want",
                    "average": f"the mean of the {plural}"}[role]
        elif role in ("find", "check"):
            name = rng.choice([f"find_{noun}", f"index_of_{noun}"]) if role == "find" else \
                rng.choice([f"is_valid_{noun}", f"has_{noun}", f"contains_{noun}", f"check_{plural}"])
            params, defaults = self.new_params([(Kind.LIST, elem), (elem, None)], 0)
            items, target = params[0].name, params[1].name
            x = self.loop_name(elem)
            if x in (items, target):
                x = "candidate"
            if role == "find":
                i = "i" if x != "i" else "idx"
                body = [f"for {i}, {x} in enumerate({items}):", f"    if {x} == {target}:", f"        return {i}",
                        "return -1"]
                returns = Kind.INT
            elif rng.random() < 0.25:
                body = ["i = 0", "while True:", f"    if i >= len({items}):", "        return False",
                        f"    if {items}[i] == {target}:", "        return True", "    i += 1"]
                returns = Kind.BOOL
            else:
                body = [f"for {x} in {items}:", f"    if {x} == {target}:", "        return True", "return False"]
                returns = Kind.BOOL
            ret_elem = None
            what = f"look for a {noun}"
        else:  # process: anything, coherent
            name = f"{rng.choice(PROCESS_VERBS)}_{rng.choice([noun, plural])}"
            kinds = [(k, rng.choice(ELEMENTS[k]) if k in ELEMENTS else None) for k in
                     rng.sample([Kind.LIST, Kind.STR, Kind.INT, Kind.DICT, Kind.SET, Kind.FLOAT, Kind.BOOL],
                                rng.randint(0, 3))]
            params, defaults = self.new_params(kinds, rng.randint(1, len(kinds)) if kinds and rng.random() < 0.7 else 0)
            body = []
            for p in params:
                if defaults.get(p.name) == "None" and p.kind in (Kind.LIST, Kind.DICT, Kind.SET):
                    body += [f"if {p.name} is None:", f"    {p.name} = {self.literal(p.kind, p.elem)}"]
            body += self.block(1, 2, 5, False, True)
            candidates = [v for v in self.scope.values() if v.kind not in (Kind.NONE, Kind.FUNCTION, Kind.INSTANCE)]
            returns = ret_elem = None
            if candidates and rng.random() < 0.75:
                ret = self.pick(candidates)
                body.append(f"return {ret.name}")
                returns, ret_elem = ret.kind, ret.elem
            elif rng.random() < 0.3:
                body.append(rng.choice(["return True", "return False", "return None"]))
                returns = Kind.BOOL if "None" not in body[-1] else None
            what = f"{name.split('_')[0]} the {noun}"
        if name in (f.name for f in self.functions) or name in RESERVED:
            name = f"{name}_{len(self.functions) + 1}"
        if rng.random() < 0.7 and all(p.name != "verbose" for p in params):
            # An option with a default, after the others (some of which may have defaults): used, not decor.
            verbose = Var(rng.choice(["verbose", "debug", "quiet", "show"]), Kind.BOOL)
            if all(p.name != verbose.name for p in params):
                last = params[-1] if params else None
                if last is not None and last.name not in defaults and last.kind in (Kind.INT, Kind.STR, Kind.BOOL) \
                        and len(params) > 1 and rng.random() < 0.5:  # an earlier option with a default too
                    defaults[last.name] = {Kind.INT: self.number(), Kind.STR: self.string(),
                                           Kind.BOOL: rng.choice(["True", "False"])}[last.kind]
                params.append(verbose)
                defaults[verbose.name] = rng.choice(["False", "False", "True"])
                q = self.quote()
                note = [f"if {verbose.name}:" if verbose.name != "quiet" else "if not quiet:",
                        f"    print(f{q}{name}: {{{params[0].name if params[0] is not verbose else 'None'}}}{q})"]
                at = len(body) - 1 if body and body[-1].startswith("return") else len(body)
                body = body[:at] + note + body[at:]
        annotate = rng.random() < 0.25
        head = f"def {name}({self.param_list(params, defaults, False, annotate)}):"
        doc = self.docstring(what) if rng.random() < 0.35 else []
        for p in params:  # a parameter defaulting to None is replaced before use
            if defaults.get(p.name) == "None" and role != "process" and p.kind in (Kind.LIST, Kind.DICT, Kind.SET,
                                                                                    Kind.STR, Kind.INT):
                body = [f"if {p.name} is None:", f"    {p.name} = {self.literal(p.kind, p.elem)}"] + body
        lines = [head] + self.indent(doc + body)
        self.functions.append(Signature(name, params, defaults, returns, ret_elem))
        self.scope = outer
        return lines

    def klass(self) -> list[str]:
        """A class whose __init__ stores its parameters under their own names, and methods that use them."""
        rng = self.rng
        name = rng.choice(CLASS_NOUNS)
        if any(c.name == name for c in self.classes):
            return []
        outer = self.scope
        self.scope = {}
        cls = ClassSpec(name)
        kinds = rng.sample([(Kind.STR, None), (Kind.INT, None), (Kind.LIST, rng.choice([Kind.INT, Kind.STR])),
                            (Kind.FLOAT, None), (Kind.DICT, Kind.INT), (Kind.SET, Kind.STR), (Kind.BOOL, None)],
                           rng.randint(1, 4))
        params, defaults = self.new_params(kinds, rng.randint(1, len(kinds)) if rng.random() < 0.6 else 0)
        init_body = []
        for p in params:
            if defaults.get(p.name) == "None" and p.kind in (Kind.LIST, Kind.DICT, Kind.SET):
                init_body.append(f"self.{p.name} = {p.name} if {p.name} is not None else {self.literal(p.kind, p.elem)}")
            else:
                init_body.append(f"self.{p.name} = {p.name}")
            cls.attrs.append(Var(p.name, p.kind, p.elem))
        for _ in range(rng.randint(0, 2)):
            kind = rng.choice([Kind.LIST, Kind.SET, Kind.INT, Kind.DICT, Kind.STR])
            elem = rng.choice(ELEMENTS[kind]) if kind in ELEMENTS else None
            attr = self.name_for(kind, elem)
            if any(a.name == attr for a in cls.attrs):
                continue
            init_value = {Kind.LIST: "[]", Kind.SET: "set()", Kind.INT: "0", Kind.DICT: "{}",
                          Kind.STR: rng.choice(['""', "''"])}[kind]
            init_body.append(f"self.{attr} = {init_value}")
            cls.attrs.append(Var(attr, kind, elem))
        init = Signature("__init__", params, defaults)
        cls.methods.append(init)
        body = self.docstring(f"a {name.lower()}") if rng.random() < 0.4 else []
        body += [f"def __init__({self.param_list(params, defaults, True, rng.random() < 0.2)}):"] + self.indent(init_body)
        for _ in range(rng.randint(1, 3)):
            body += [""] + self.method(cls)
        if rng.random() < 0.25:
            q = self.quote()
            a = rng.choice(cls.attrs).name
            body += ["", "def __repr__(self):", f"    return f{q}{name}({{self.{a}}}){q}"]
        self.scope = outer
        self.classes.append(cls)
        return [f"class {name}{rng.choice(['', '', '', '(object)'])}:"] + self.indent(body)

    def method(self, cls: ClassSpec) -> list[str]:
        """A method that works on the attributes as their types allow."""
        rng = self.rng
        self.scope = {f"self.{a.name}": Var(f"self.{a.name}", a.kind, a.elem, born=self.clock) for a in cls.attrs}
        attr = rng.choice(cls.attrs)
        a = f"self.{attr.name}"
        k, e = attr.kind, attr.elem
        returns = ret_elem = None
        params: list[Var] = []
        defaults: dict[str, str] = {}
        noun = attr.name.split("_")[-1].rstrip("s") or "item"
        if k in (Kind.LIST, Kind.SET) and rng.random() < 0.6:
            mname = rng.choice([f"add_{noun}", "add", f"record_{noun}", "remember"])
            params, defaults = self.new_params([(e or Kind.INT, None)], 0)
            body = [f"{a}.{'append' if k == Kind.LIST else 'add'}({params[0].name})"]
            counters = [x for x in cls.attrs if x.kind == Kind.INT]
            if counters and rng.random() < 0.5:
                body.append(f"self.{counters[0].name} += 1")
        elif k in (Kind.LIST, Kind.SET, Kind.DICT) and rng.random() < 0.5:
            mname = rng.choice([f"has_{noun}", "contains", f"knows_{noun}"])
            key = Kind.STR if k == Kind.DICT else e or Kind.INT
            params, defaults = self.new_params([(key, None)], 0)
            body = [f"return {params[0].name} in {a}"]
            returns = Kind.BOOL
        elif k == Kind.DICT:
            mname = rng.choice([f"set_{noun}", "update", f"store_{noun}"])
            params, defaults = self.new_params([(Kind.STR, None), (e or Kind.INT, None)], 0)
            body = [f"{a}[{params[0].name}] = {params[1].name}"]
        elif k in (Kind.INT, Kind.FLOAT):
            if rng.random() < 0.5:
                mname = rng.choice(["increment", f"add_{noun}", "bump", "grow"])
                params, defaults = self.new_params([(k, None)], 1)
                defaults[params[0].name] = "1" if k == Kind.INT else "1.0"
                body = [f"{a} += {params[0].name}"]
            else:
                mname = rng.choice([f"is_{rng.choice(['full', 'empty', 'large', 'ready', 'valid'])}", f"over_{noun}"])
                body = [f"return {a} {rng.choice(['>', '>=', '<', '=='])} {self.number()}"]
                returns = Kind.BOOL
        elif k == Kind.STR:
            if rng.random() < 0.5:
                mname = rng.choice(["describe", "summary", f"format_{noun}", "label"])
                others = [x for x in cls.attrs if x.kind in (Kind.INT, Kind.FLOAT, Kind.STR)]
                vs = [Var(f"self.{o.name}", o.kind) for o in rng.sample(others, min(2, len(others)))]
                body = [f"return {self.fstring(vs)}"]
                returns = Kind.STR
            else:
                mname = rng.choice(["rename", f"set_{noun}", f"append_{noun}"])
                params, defaults = self.new_params([(Kind.STR, None)], 0)
                body = [f"{a} = {params[0].name}.strip()" if mname != f"append_{noun}" else f"{a} += {params[0].name}"]
        else:
            mname = rng.choice(["toggle", "switch", "flip"])
            body = [f"{a} = not {a}"] if k == Kind.BOOL else [f"print({a})"]
        if rng.random() < 0.35:
            body = self.block(2, 1, 2, False, True, allow_control=rng.random() < 0.5) + body \
                if not body[-1].startswith("return") else self.block(2, 1, 1, False, True, allow_control=False) + body
        if mname in (m.name for m in cls.methods):
            mname = f"{mname}_{len(cls.methods)}"
        cls.methods.append(Signature(mname, params, defaults, returns, ret_elem))
        return [f"def {mname}({self.param_list(params, defaults, True, False)}):"] + self.indent(body)

    def module(self) -> str:
        rng = self.rng
        self.scope, self.constants, self.functions, self.classes, self.imports = {}, {}, [], [], set()
        self.theme = rng.sample(NOUNS, rng.randint(2, 4))
        head: list[str] = []
        if rng.random() < 0.3:
            head += self.docstring(f"{rng.choice(synthetic_v1.VERBS)} {self.plural(self.noun())}") + [""]
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice([Kind.INT, Kind.STR, Kind.LIST, Kind.FLOAT])
            elem = rng.choice([Kind.INT, Kind.STR]) if kind == Kind.LIST else None
            const = self.noun().upper() + rng.choice(["", "_SIZE", "_NAME", "_LIMIT", "S", "_PATH"])
            if const in self.constants:
                continue
            self.constants[const] = Var(const, kind, elem)
            head.append(f"{const} = {self.literal(kind, elem)}")
        body: list[str] = []
        if rng.random() < 0.35:
            # A script: top-level statements only.
            body += self.block(0, 4, 10)
        else:
            for _ in range(rng.randint(1, 4)):
                part = self.klass() if rng.random() < 0.3 else self.function()
                if part:
                    body += ["", ""] + part
            if rng.random() < 0.7:
                self.scope = {}
                main = self.block(0, 2, 6)
                body += ["", ""]
                r = rng.random()
                if r < 0.4:
                    body += ["def main():"] + self.indent(main) + ["", "", 'if __name__ == "__main__":', "    main()"]
                elif r < 0.7:
                    body += ['if __name__ == "__main__":'] + self.indent(main)
                else:
                    body += main
        imports = [f"import {m}" for m in sorted(self.imports)]
        extra = rng.sample(["os", "sys", "json", "re", "time", "collections", "itertools"], rng.randint(0, 2))
        imports += [f"import {m}" for m in extra if m not in self.imports]
        lines = head[:1] if head and head[0].startswith(('"""', "'''")) else []
        rest = head[len(lines):]
        if lines:
            lines.append("")
        lines += imports + ([""] if imports else []) + [l for l in rest if l != ""]
        return "\n".join(lines + body).strip("\n") + "\n"


def generate_programs(seed: int, version: int = GENERATOR_VERSION) -> Iterator[str]:
    """An endless, deterministic stream of small Python modules for `seed` and generator `version`."""
    if version == 1:
        yield from synthetic_v1.generate_programs(seed)
        return
    if version != 2:
        raise ValueError(f"unknown generator version {version}; known: {VERSIONS}")
    rng = random.Random(f"synthetic-python/{version}/{seed}")
    gen = _Gen(rng)
    while True:
        yield gen.module()
