"""Simple Python programs, generated: version 1, kept so that its corpora can be rebuilt exactly
(`sparse-circuits data --synthetic-version 1`; issue 10's results were measured on them). Version 2
(`synthetic.py`, the default) writes coherent, typed programs; this one picks every use of a name
whatever the name holds. Its name pools are shared with version 2.

[ours] The paper's pretraining mix had ~10B tokens of deliberately simple, repetitive Python
beside realistic code; its generator is not public. This one writes whole small modules and
scripts from a seeded random stream (fully deterministic for a seed): functions with defaults
and keyword arguments, classes with `__init__`, loops of every kind, `if`/`elif`/`else`,
ternaries, comprehensions, `with` blocks and files, dict / list / set / nested literals,
f-strings and plain strings with both quote types, lambdas, swaps, `enumerate` / `range`,
`while True` loops, `try` / `except`, comments and docstrings.

It belongs to the data stage and shares no code or name pools with `sparse_circuits.tasks`: its
identifiers come from the pools below, and it never writes a task's prompt template (the
contamination report, `sparse_circuits.tasks.contamination`, measures that on every data
directory). Every file it writes parses (`ast.parse`, checked by the tests).
"""

from __future__ import annotations

import random
from typing import Iterator

GENERATOR_VERSION = 1

# -- name pools (our own; the task suite has separate ones) -------------------------------------

NOUNS = """
apple banana basket book bottle box card cart city color coin customer day deck dog email
employee file fruit game grade guest hour invoice item job key letter line list map message
month movie name note number order page pair person pet phone player point price product
question record report room row score sentence shape ship song stock store student table
task team temperature ticket title town track tree user value vehicle word worker year zone
account address animal answer article batch bird block bonus budget button car chapter
circle client column comment course cup doc event field flower frame friend grid group
image level link match meal member menu model node offer option owner package parcel plan
planet post queue recipe region rule sample seat signal size slot sport step tag term
test text topic total trip unit visit vote week width window
""".split()

ADJECTIVES = """
active best big current daily empty extra final first full good high last large left
little long low main max min new next old open other raw right short small total valid
""".split()

VERBS = """
add build calculate check clean collect count create draw fetch filter find format get
group handle load make merge move parse print process read remove render reset save send
show sort split store sum update validate write
""".split()

CLASS_NOUNS = """
Animal Account Bank Book Car Cart Circle Counter Customer Deck Dog Employee Game Grid
Inventory Item Library Matrix Menu Order Player Point Product Rectangle Robot Shop Student
Task Team Timer Ticket Vector Wallet
""".split()

MODULES = ["os", "sys", "math", "random", "json", "time", "re", "csv", "collections", "itertools",
           "string", "datetime", "pathlib", "statistics"]

TEXT_WORDS = """
hello world done ok start end total result found missing error warning welcome goodbye
score name value items count level ready loading saved invalid empty yes no please try
again thanks report summary average sum max min file line user game over
""".split()


class _Gen:
    """One random stream and the names in scope; emits lines (no trailing newline)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.names: list[str] = []  # variables defined so far in the current scope

    # -- names -----------------------------------------------------------------------------------

    def noun(self) -> str:
        return self.rng.choice(NOUNS)

    def plural(self, noun: str | None = None) -> str:
        n = noun or self.noun()
        if n.endswith(("s", "x", "ch", "sh")):
            return n + "es"
        if n.endswith("y") and n[-2] not in "aeiou":
            return n[:-1] + "ies"
        return n + "s"

    def var(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.noun()
        if r < 0.75:
            return f"{self.rng.choice(ADJECTIVES)}_{self.noun()}"
        if r < 0.9:
            return f"{self.noun()}_{self.rng.choice(['count', 'list', 'name', 'id', 'total', 'value', 'map', 'size'])}"
        return self.rng.choice(["x", "y", "n", "i", "j", "k", "s", "a", "b", "c", "tmp", "val", "res"])

    def func_name(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            return f"{self.rng.choice(VERBS)}_{self.noun()}"
        if r < 0.85:
            return f"{self.rng.choice(VERBS)}_{self.plural()}"
        return self.rng.choice(VERBS)

    def known(self) -> str:
        """A name defined earlier in this scope when there is one (code reads what it wrote)."""
        if self.names and self.rng.random() < 0.7:
            return self.rng.choice(self.names)
        return self.var()

    def define(self, name: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return name

    # -- literals and expressions ----------------------------------------------------------------

    def number(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return str(self.rng.randint(0, 10))
        if r < 0.85:
            return str(self.rng.choice([12, 20, 24, 50, 60, 99, 100, 255, 365, 1000, 1024]))
        return f"{self.rng.randint(0, 99)}.{self.rng.randint(0, 9)}"

    def quote(self) -> str:
        return '"' if self.rng.random() < 0.6 else "'"

    def words(self, lo: int = 1, hi: int = 3) -> str:
        return " ".join(self.rng.choice(TEXT_WORDS) for _ in range(self.rng.randint(lo, hi)))

    def string(self) -> str:
        q = self.quote()
        return f"{q}{self.words()}{q}"

    def fstring(self) -> str:
        q = self.quote()
        inner = self.rng.choice([
            f"{self.words()}: {{{self.known()}}}",
            f"{{{self.known()}}} {self.words(1, 2)}",
            f"{self.words(1, 2)} {{{self.known()}}} {self.words(1, 2)}",
            f"{self.words(1, 1)} {{{self.known()}:.2f}}",
            f"{{{self.known()}}}, {{{self.known()}}}",
        ])
        return f"f{q}{inner}{q}"

    def simple(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.known()
        if r < 0.7:
            return self.number()
        if r < 0.85:
            return self.string()
        return self.rng.choice(["True", "False", "None"])

    def list_literal(self, nested: bool = False) -> str:
        if nested:
            rows = [self.list_literal() for _ in range(self.rng.randint(2, 3))]
            return "[" + ", ".join(rows) + "]"
        kind = self.rng.random()
        n = self.rng.randint(0, 4)
        if kind < 0.5:
            items = [self.number() for _ in range(n)]
        elif kind < 0.8:
            q = self.quote()
            items = [f"{q}{self.rng.choice(TEXT_WORDS)}{q}" for _ in range(n)]
        else:
            items = [self.known() for _ in range(n)]
        return "[" + ", ".join(items) + "]"

    def dict_literal(self) -> str:
        q = self.quote()
        n = self.rng.randint(0, 3)
        if self.rng.random() < 0.7:
            items = [f"{q}{self.noun()}{q}: {self.simple()}" for _ in range(n)]
        else:
            items = [f"{self.known()}: {self.simple()}" for _ in range(n)]
        return "{" + ", ".join(items) + "}"

    def set_literal(self) -> str:
        if self.rng.random() < 0.5:
            return "set()"
        return "{" + ", ".join(self.number() for _ in range(self.rng.randint(1, 4))) + "}"

    def condition(self) -> str:
        a = self.known()
        return self.rng.choice([
            f"{a} > {self.number()}", f"{a} < {self.number()}", f"{a} >= {self.number()}",
            f"{a} == {self.simple()}", f"{a} != {self.simple()}", f"{a} is None", f"{a} is not None",
            f"not {a}", f"{a}", f"len({a}) == 0", f"len({a}) > {self.number()}", f"{a} in {self.known()}",
            f"{a} not in {self.known()}", f"{a} and {self.known()}", f"{a} or not {self.known()}",
            f"{a} % 2 == 0", f"isinstance({a}, {self.rng.choice(['int', 'str', 'list', 'dict'])})",
            f"{a} == True", f"{a} == False",
        ])

    def call(self) -> str:
        a = self.known()
        return self.rng.choice([
            f"len({a})", f"sum({a})", f"max({a})", f"min({a})", f"sorted({a})", f"str({a})",
            f"int({a})", f"list({a})", f"abs({a})", f"round({a}, 2)", f"{a}.strip()", f"{a}.split()",
            f"{a}.lower()", f"{a}.upper()", f"{a}.get({self.string()})", f"{a}.get({self.string()}, {self.simple()})",
            f"{a}.pop()", f"{a}.copy()", f"{self.func_name()}({a})", f"{self.func_name()}({a}, {self.simple()})",
            f"{self.func_name()}()", f"{a}.count({self.simple()})", f"{a}.replace({self.string()}, {self.string()})",
            f"{self.func_name()}({a}, {self.var()}={self.simple()})",
            f"sorted({a}, key=lambda {self.var()}: {self.var()}[{self.rng.randint(0, 2)}])",
            f"sorted({a}, reverse=True)", f"input({self.string()})", f"{a}.items()", f"{a}.keys()",
            f"{a}.values()", f"{a}.join({self.known()})", f"range({self.number()})",
        ])

    def comprehension(self) -> str:
        x = self.rng.choice(["x", "item", "n", "w", self.noun()])
        src = self.known()
        body = self.rng.choice([x, f"{x} * 2", f"{x}.strip()", f"str({x})", f"{x} + 1", f"len({x})"])
        cond = self.rng.choice(["", f" if {x}", f" if {x} > {self.number()}", f" if {x} is not None"])
        kind = self.rng.random()
        if kind < 0.6:
            return f"[{body} for {x} in {src}{cond}]"
        if kind < 0.8:
            return f"{{{x}: {body} for {x} in {src}{cond}}}"
        if kind < 0.9:
            return f"{{{body} for {x} in {src}{cond}}}"
        return f"sum({body} for {x} in {src}{cond})"

    def expr(self) -> str:
        r = self.rng.random()
        if r < 0.25:
            return self.simple()
        if r < 0.45:
            return self.call()
        if r < 0.53:
            return self.list_literal(nested=self.rng.random() < 0.2)
        if r < 0.6:
            return self.dict_literal()
        if r < 0.65:
            return self.set_literal()
        if r < 0.73:
            return self.comprehension()
        if r < 0.8:
            a = self.known()
            return f"{a} {self.rng.choice(['+', '-', '*', '/', '//', '%'])} {self.rng.choice([self.number(), self.known()])}"
        if r < 0.88:
            return f"{self.simple()} if {self.condition()} else {self.simple()}"
        if r < 0.93:
            return self.fstring()
        if r < 0.97:
            return f"{self.known()}[{self.rng.choice([self.number(), '0', '-1', self.string(), self.known(), '1:', ':2'])}]"
        return f"lambda {self.var()}: {self.simple()}"

    # -- statements --------------------------------------------------------------------------------
    # Each returns a list of lines indented relative to the block they are in.

    @staticmethod
    def indent(lines: list[str]) -> list[str]:
        return ["    " + l if l else l for l in lines]

    def body(self, depth: int, n_lo: int = 1, n_hi: int = 3, in_loop: bool = False, in_func: bool = False) -> list[str]:
        lines: list[str] = []
        for _ in range(self.rng.randint(n_lo, n_hi)):
            lines += self.statement(depth, in_loop, in_func)
        if all(line.lstrip().startswith("#") for line in lines):
            lines.append("pass")  # a block needs a statement, not only comments
        return lines

    def statement(self, depth: int, in_loop: bool = False, in_func: bool = False) -> list[str]:
        choices = [(self.assign, 5), (self.augassign, 2), (self.call_stmt, 3), (self.print_stmt, 3)]
        if depth < 3:
            choices += [(self.if_stmt, 3), (self.for_stmt, 3), (self.while_stmt, 1), (self.with_stmt, 1),
                        (self.try_stmt, 1), (self.accumulate, 1)]
        choices += [(self.swap, 0.3), (self.comment, 0.7), (self.assert_stmt, 0.3)]
        if in_loop:
            choices += [(lambda d, l, f: ["break"], 0.3), (lambda d, l, f: ["continue"], 0.3)]
        if in_func:
            choices += [(self.return_stmt, 0.5)]
        fn = self.rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
        return fn(depth, in_loop, in_func)

    def assign(self, depth, in_loop, in_func) -> list[str]:
        value = self.expr()
        name = self.var()
        r = self.rng.random()
        if r < 0.08:
            return [f"{self.define(name)} = {self.rng.choice(['True', 'False'])}"]
        if r < 0.12:
            return [f"{self.define(name)}, {self.define(self.var())} = {self.simple()}, {self.simple()}"]
        if r < 0.17 and self.names:
            return [f"{self.known()}[{self.rng.choice([self.string(), self.number(), self.known()])}] = {value}"]
        return [f"{self.define(name)} = {value}"]

    def augassign(self, depth, in_loop, in_func) -> list[str]:
        return [f"{self.known()} {self.rng.choice(['+=', '-=', '*=', '+=', '+='])} "
                f"{self.rng.choice([self.number(), self.known(), self.string()])}"]

    def call_stmt(self, depth, in_loop, in_func) -> list[str]:
        a = self.known()
        return [self.rng.choice([
            f"{a}.append({self.simple()})", f"{a}.add({self.simple()})", f"{a}.extend({self.known()})",
            f"{a}.update({self.dict_literal()})", f"{a}.sort()", f"{a}.remove({self.simple()})",
            f"{self.func_name()}({a})", f"{self.func_name()}({a}, {self.simple()})",
            f"{self.func_name()}({a}, {self.var()}={self.simple()})",
            f"{a}.insert(0, {self.simple()})", f"{a}.clear()",
        ])]

    def print_stmt(self, depth, in_loop, in_func) -> list[str]:
        arg = self.rng.choice([self.string(), self.fstring(), self.fstring(), self.known(),
                               f"{self.string()}, {self.known()}"])
        fn = self.rng.choice(["print", "print", "print", "logging.info"])
        return [f"{fn}({arg})"]

    def comment(self, depth, in_loop, in_func) -> list[str]:
        return [f"# {self.rng.choice(VERBS)} the {self.rng.choice([self.noun(), self.plural()])}"
                + self.rng.choice(["", "", f" {self.words(1, 2)}"])]

    def assert_stmt(self, depth, in_loop, in_func) -> list[str]:
        return [f"assert {self.condition()}"]

    def swap(self, depth, in_loop, in_func) -> list[str]:
        a, b = self.known(), self.var()
        if a == b:
            b = b + "2"
        return [f"{a}, {b} = {b}, {a}"]

    def return_stmt(self, depth, in_loop, in_func) -> list[str]:
        return [self.rng.choice([f"return {self.expr()}", f"return {self.known()}", "return",
                                 "return True", "return False", "return None"])]

    def if_stmt(self, depth, in_loop, in_func) -> list[str]:
        lines = [f"if {self.condition()}:"] + self.indent(self.body(depth + 1, 1, 2, in_loop, in_func))
        for _ in range(self.rng.choice([0, 0, 1, 1, 2])):
            lines += [f"elif {self.condition()}:"] + self.indent(self.body(depth + 1, 1, 2, in_loop, in_func))
        if self.rng.random() < 0.5:
            lines += ["else:"] + self.indent(self.body(depth + 1, 1, 2, in_loop, in_func))
        return lines

    def for_stmt(self, depth, in_loop, in_func) -> list[str]:
        src = self.known()
        x = self.define(self.rng.choice([self.noun(), self.noun(), "x", "item", "line", "word"]))
        r = self.rng.random()
        if r < 0.35:
            head = f"for {x} in {src}:"
        elif r < 0.55:
            i = self.define(self.rng.choice(["i", "j", "k", "n", "idx", "index", "count"]))
            head = f"for {i} in range({self.rng.choice([self.number(), f'len({src})', f'1, {self.number()}'])}):"
        elif r < 0.72:
            i = self.define(self.rng.choice(["i", "j", "n", "idx", "index", "num", "pos"]))
            head = f"for {i}, {x} in enumerate({src}):"
        elif r < 0.82:
            k, v = self.define(self.rng.choice(["key", "k", "name"])), self.define(self.rng.choice(["value", "v", "count"]))
            head = f"for {k}, {v} in {src}.items():"
        elif r < 0.9:
            y = self.define(self.var())
            head = f"for {x}, {y} in zip({src}, {self.known()}):"
        else:
            head = f"for {x} in sorted({src}):"
        return [head] + self.indent(self.body(depth + 1, 1, 3, True, in_func))

    def while_stmt(self, depth, in_loop, in_func) -> list[str]:
        if self.rng.random() < 0.5:
            body = self.body(depth + 1, 1, 2, True, in_func)
            body += [f"if {self.condition()}:", "    break"]
            return ["while True:"] + self.indent(body)
        n = self.known()
        return [f"while {self.rng.choice([self.condition(), n, f'{n} > 0', f'{n} < {self.number()}'])}:"] + \
            self.indent(self.body(depth + 1, 1, 2, True, in_func) + [f"{n} {self.rng.choice(['-=', '+='])} 1"])

    def with_stmt(self, depth, in_loop, in_func) -> list[str]:
        q = self.quote()
        path = self.rng.choice([self.known(), f"{q}{self.noun()}.{self.rng.choice(['txt', 'csv', 'json', 'log'])}{q}"])
        f = self.define(self.rng.choice(["f", "fh", "file", "infile", "outfile", "handle"]))
        r = self.rng.random()
        if r < 0.35:
            body = [f"{self.define(self.var())} = {f}.{self.rng.choice(['read()', 'readlines()', 'read().splitlines()'])}"]
            return [f"with open({path}) as {f}:"] + self.indent(body)
        if r < 0.55:
            body = [f"for {self.define('line')} in {f}:"] + self.indent(self.body(depth + 2, 1, 2, True, in_func))
            return [f"with open({path}, {q}r{q}) as {f}:"] + self.indent(body)
        if r < 0.8:
            body = [f"{f}.write({self.rng.choice([self.fstring(), self.known(), self.string()])})"]
            return [f"with open({path}, {q}{self.rng.choice(['w', 'a'])}{q}) as {f}:"] + self.indent(body)
        # The open / close form.
        return [f"{f} = open({path}{self.rng.choice(['', f', {q}r{q}', f', {q}w{q}'])})",
                f"{self.define(self.var())} = {f}.read()" if self.rng.random() < 0.5 else f"{f}.write({self.string()})",
                f"{f}.close()"]

    def try_stmt(self, depth, in_loop, in_func) -> list[str]:
        err = self.rng.choice(["ValueError", "KeyError", "IndexError", "TypeError", "Exception", "OSError",
                               "ZeroDivisionError"])
        handler = self.rng.choice([[f"print({self.string()})"], ["pass"], [f"{self.define(self.var())} = None"],
                                   [self._error_print()]])
        as_e = " as e" if "{e}" in handler[0] else ""
        lines = ["try:"] + self.indent(self.body(depth + 1, 1, 2, in_loop, in_func))
        lines += [f"except {err}{as_e}:"] + self.indent(handler)
        return lines

    def _error_print(self) -> str:
        q = self.quote()
        return f"print(f{q}error: {{e}}{q})"

    def accumulate(self, depth, in_loop, in_func) -> list[str]:
        """Collect into a set, a list, a dict or a string over a loop: everyday idioms."""
        acc = self.var()
        src = self.known()
        x = self.rng.choice(["x", "item", "word", self.noun()])
        kind = self.rng.choice(["set", "list", "str", "dict", "count"])
        q = self.quote()
        if kind == "set":
            init, step = "set()", f"{acc}.add({x})"
        elif kind == "list":
            init, step = "[]", f"{acc}.append({x})"
        elif kind == "str":
            init, step = self.rng.choice([f"{q}{q}", "str()"]), f"{acc} += {self.rng.choice([x, f'str({x})', f'{x} + {q} {q}'])}"
        elif kind == "dict":
            init, step = "{}", f"{acc}[{x}] = {acc}.get({x}, 0) + 1"
        else:
            init, step = "0", f"{acc} += {self.rng.choice(['1', x])}"
        self.define(acc)
        return [f"{acc} = {init}", f"for {x} in {src}:", f"    {step}"]

    # -- definitions -----------------------------------------------------------------------------

    def docstring(self) -> list[str]:
        q = self.rng.choice(['"""', "'''"]) if self.rng.random() < 0.9 else '"""'
        return [f"{q}{self.rng.choice(VERBS).capitalize()} the {self.rng.choice([self.noun(), self.plural()])}.{q}"]

    def params(self) -> tuple[list[str], str]:
        names = []
        for _ in range(self.rng.randint(0, 4)):
            n = self.var()
            if n not in names:
                names.append(n)
        n_default = self.rng.randint(0, len(names)) if self.rng.random() < 0.5 else 0
        parts = names[:len(names) - n_default]
        for n in names[len(names) - n_default:]:
            parts.append(f"{n}={self.rng.choice(['None', self.number(), self.string(), 'True', 'False', '()'])}")
        if self.rng.random() < 0.1:
            parts.append("*args")
        if self.rng.random() < 0.1:
            parts.append("**kwargs")
        return names, ", ".join(parts)

    def function(self, method: bool = False) -> list[str]:
        outer = self.names
        names, params = self.params()
        self.names = list(names)
        name = self.func_name()
        if method:
            params = "self" + (", " + params if params else "")
        lines = [f"def {name}({params}):"]
        body = self.docstring() if self.rng.random() < 0.4 else []
        body += self.body(1, 1, 4, False, True)
        if self.rng.random() < 0.7:
            body += self.return_stmt(1, False, True)
        lines += self.indent(body)
        self.names = outer
        return lines

    def klass(self) -> list[str]:
        name = self.rng.choice(CLASS_NOUNS)
        base = self.rng.choice(["", "", "", "(object)"])
        lines = [f"class {name}{base}:"]
        body = self.docstring() if self.rng.random() < 0.5 else []
        outer = self.names
        attrs, params = self.params()
        if not attrs:
            attrs, params = [self.noun()], ""
            params = attrs[0]
        init = [f"def __init__(self, {params}):"]
        init_body = [f"self.{a} = {a}" for a in attrs]
        for _ in range(self.rng.randint(0, 2)):
            extra = self.noun()
            init_body.append(f"self.{extra} = {self.rng.choice(['[]', '{}', '0', 'None', 'set()', self.string()])}")
        init += self.indent(init_body)
        body += init
        for _ in range(self.rng.randint(0, 3)):
            self.names = [f"self.{a}" for a in attrs]
            body += [""] + self.function(method=True)
        if self.rng.random() < 0.2:
            q = self.quote()
            body += ["", "def __repr__(self):", f"    return f{q}{name}({{self.{attrs[0]}}}){q}"]
        self.names = outer
        return lines + self.indent(body)

    def module(self) -> str:
        lines: list[str] = []
        if self.rng.random() < 0.3:
            lines += self.docstring() + [""]
        imports = self.rng.sample(MODULES, self.rng.randint(0, 3))
        lines += [f"import {m}" for m in imports]
        if self.rng.random() < 0.2:
            lines.append("import logging")
        if imports or lines:
            lines.append("")
        self.names = []
        for _ in range(self.rng.randint(0, 3)):
            const = self.noun().upper() + self.rng.choice(["", "_SIZE", "_NAME", "_LIMIT", "S"])
            lines.append(f"{const} = {self.rng.choice([self.number(), self.string(), self.list_literal()])}")
        kind = self.rng.random()
        if kind < 0.35:
            # A script: top-level statements only.
            lines.append("")
            for _ in range(self.rng.randint(3, 10)):
                lines += self.statement(0)
        else:
            for _ in range(self.rng.randint(1, 4)):
                lines += ["", ""] + (self.klass() if self.rng.random() < 0.3 else self.function())
            if self.rng.random() < 0.5:
                lines += ["", ""]
                top = self.body(0, 1, 4)
                if self.rng.random() < 0.5:
                    lines += ['if __name__ == "__main__":'] + self.indent(top)
                else:
                    lines += top
        return "\n".join(lines).strip("\n") + "\n"


def generate_programs(seed: int) -> Iterator[str]:
    """An endless, deterministic stream of small Python modules for `seed`."""
    rng = random.Random(f"synthetic-python/{GENERATOR_VERSION}/{seed}")
    gen = _Gen(rng)
    while True:
        yield gen.module()
