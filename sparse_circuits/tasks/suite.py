"""The 20 Python next-token tasks of the paper (SPEC section 5) and the nonsense control.

Each generator returns one minimal pair: prompt A and prompt B differ only in the deciding
detail; `cont_a` is right after A, `cont_b` after B. Continuations are written as the text that
follows, and the evaluated token is whatever the tokenizer makes of it in context (see core.py):
e.g. `")` followed by a newline is evaluated as the single token `")\n`.
"""

from __future__ import annotations

from .core import PairSpec, Pools, task


@task("single_double_quote", "close a string with the quote that opened it", ('")', "')"),
      corpus_patterns=(r'"\)', r"'\)"))
def single_double_quote(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    call = p.rng.choice([f"{p.var()} = {p.func()}(", "print(", f"{p.var()}.append(", "raise ValueError(",
                         f"{p.var()} = {p.var()}.get(", "logger.info("])
    w = p.word()
    return PairSpec(f'{pre}{ind}{call}"{w}', f"{pre}{ind}{call}'{w}", '")', "')")


@task("final_kwarg", "after parameters with defaults the next parameter needs a default", ("=None", "):\n"),
      corpus_patterns=(r"def \w+\([^)\n]*=[^)\n]*, \w+=", r"def \w+\(\w+(, \w+)*\):"))
def final_kwarg(p: Pools) -> PairSpec:
    f = p.func()
    a, b, c = p.vars(3)
    default = p.rng.choice(["None", "0", "True", "False", "''", p.number()])
    lead = p.rng.choice(["", "self, "])
    body = f"    return {a}\n"
    return PairSpec(f"{p.scope(0)[0]}def {f}({lead}{a}={default}, {b}", f"{p.scope(0)[0]}def {f}({lead}{a}, {b}",
                    "=None", "):\n", ending_a=f"):\n{body}", ending_b=body)


def _set_or_string(p: Pools, name: str) -> PairSpec:
    pre, ind = p.scope()
    x, src = p.vars(2)
    if x == name or src == name:
        x, src = "item", "source_items"
    init_b = p.rng.choice(['""', "''", "str()"])
    loop = f"{ind}for {x} in {src}:\n{ind}    {name}"
    return PairSpec(f"{pre}{ind}{name} = set()\n{loop}", f"{pre}{ind}{name} = {init_b}\n{loop}",
                    ".add", " +=", ending_a=f"({x})\n", ending_b=f" {x}\n")


@task("set_or_string", "a variable initialised as set() gets .add, one initialised as a string gets +=",
      (".add", " +="), corpus_patterns=(r"\w+\.add\(", r"\w+ \+= "))
def set_or_string(p: Pools) -> PairSpec:
    return _set_or_string(p, p.var())


@task("set_or_string_fixedvarname", "set_or_string with the variable always named `current`",
      (".add", " +="), corpus_patterns=(r"current\.add\(", r"current \+= "))
def set_or_string_fixedvarname(p: Pools) -> PairSpec:
    return _set_or_string(p, "current")


@task("set_or_string_two_vars", "DIAGNOSTIC: a set and a string are both defined (either order); the name "
      "used in the loop decides .add or +=", (".add", " +="), diagnostic=True,
      probes=("set_or_string", "set_or_string_fixedvarname"))
def set_or_string_two_vars(p: Pools) -> PairSpec:
    """Prompts A and B hold the same definitions and differ only in the name used: a mechanism that
    reads "the nearest definition" (or any set() / "" nearby) answers both alike, at chance; only a
    lookup of the name's own binding does the task."""
    pre, ind = p.scope()
    s, t, x, src = p.vars(4)
    init_t = p.rng.choice(['""', "''", "str()"])
    defs = [f"{ind}{s} = set()\n", f"{ind}{t} = {init_t}\n"]
    p.rng.shuffle(defs)
    loop = f"{pre}{''.join(defs)}{ind}for {x} in {src}:\n{ind}    "
    return PairSpec(f"{loop}{s}", f"{loop}{t}", ".add", " +=", ending_a=f"({x})\n", ending_b=f" {x}\n")


@task("class_init", "in a run of self.x = x lines, assign the parameter named like the attribute",
      (" <this attribute>", " <another parameter>"), corpus_patterns=(r"self\.(\w+) = \1\b", ""))
def class_init(p: Pools) -> PairSpec:
    names = p.vars(p.rng.randint(3, 4))
    done = names[:-2]
    a, b = names[-2], names[-1]
    head = f"{p.scope(0)[0]}class {p.choice('classes')}:\n    def __init__(self, {', '.join(names)}):\n"
    head += "".join(f"        self.{n} = {n}\n" for n in done)
    return PairSpec(f"{head}        self.{a} =", f"{head}        self.{b} =", f" {a}", f" {b}")


@task("with_as", "`with open(...)` continues with ` as`, `f = open(...)` ends the line", (") as", ")\n"),
      corpus_patterns=(r"with open\([^\n]*\) as", r"= open\([^\n]*\)\n"))
def with_as(p: Pools) -> PairSpec:
    pre, ind = p.scope(p.rng.randint(1, 2))
    f, path = p.vars(2)
    call = p.rng.choice([f"open({path}", f"open({path}, {p.var()}", f"open({path}, mode"])
    return PairSpec(f"{pre}{ind}with {call}", f"{pre}{ind}{f} = {call}", ")", ")\n",
                    ending_a=f" as {f}:\n{ind}    pass\n", ending_b="")


@task("bracket_brace", "inside a dict literal the next key takes `:`, inside a list the next item takes `,`",
      (":", ","), corpus_patterns=(r"\{\w+: \w+, \w+:", r"\[\w+, \w+, \w+"))
def bracket_brace(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    v, k1, v1, k2 = p.vars(4)
    return PairSpec(f"{pre}{ind}{v} = {{{k1}: {v1}, {k2}", f"{pre}{ind}{v} = [{k1}, {v1}, {k2}", ":", ",",
                    ending_a=f" {v1}}}\n", ending_b="]\n")


@task("with_open", "a file opened in a read_ function gets mode r, in a write_ function mode w", ("r", "w"),
      corpus_patterns=(r"open\([^\n]*['\"]r['\"]", r"open\([^\n]*['\"]w['\"]"))
def with_open(p: Pools) -> PairSpec:
    thing = p.var()
    path, out = p.vars(2)
    q = p.rng.choice(['"', "'"])
    head = p.scope(0)[0]
    a = f"{head}def read_{thing}({path}):\n    with open({path}, {q}"
    b = f"{head}def write_{thing}({path}, {out}):\n    with open({path}, {q}"
    return PairSpec(a, b, "r", "w", ending_a=f"{q}) as f:\n        return f.read()\n",
                    ending_b=f"{q}) as f:\n        f.write({out})\n")


@task("bracket_counting", "a flat list closes with `]`, a list of lists with `]]`", ("]\n", "]]\n"),
      corpus_patterns=(r"[^\]]\]\n", r"\]\]\n"))
def bracket_counting(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    v = p.var()
    items = [p.number() for _ in range(p.rng.randint(2, 4))]
    flat = ", ".join(items)
    inner = "[" + ", ".join(p.number() for _ in range(2)) + "], " if p.rng.random() < 0.5 else ""
    return PairSpec(f"{pre}{ind}{v} = [{flat}", f"{pre}{ind}{v} = [{inner}[{flat}", "]\n", "]]\n", "", "")


@task("for_while", "`for x` continues with ` in`, `while x` with `:`", (" in", ":"),
      corpus_patterns=(r"for \w+ in", r"while \w+:"))
def for_while(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    x, src = p.vars(2)
    return PairSpec(f"{pre}{ind}for {x}", f"{pre}{ind}while {x}", " in", ":",
                    ending_a=f" {src}:\n{ind}    pass\n", ending_b=f"\n{ind}    break\n")


@task("else_elif", "`else` is followed by `:`, `elif` by a condition", (":", " <condition>"),
      corpus_patterns=(r"else:", r"elif "))
def else_elif(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    x, y = p.vars(2)
    n = p.number()
    head = f"{pre}{ind}if {x} > {n}:\n{ind}    {y} = {x}\n{ind}"
    return PairSpec(f"{head}else", f"{head}elif", ":", f" {x}",
                    ending_a=f"\n{ind}    {y} = None\n", ending_b=f" < {n}:\n{ind}    {y} = None\n")


@task("fstring_brace", "an f-string continues with a `{` field, a plain string closes", (" {", '")'),
      corpus_patterns=(r'f"[^"\n]*\{', r'print\("[^"{\n]*"\)'))
def fstring_brace(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    w, v = p.word(), p.var()
    fn = p.rng.choice(["print", "logger.info", "log", "sys.stdout.write"])
    return PairSpec(f'{pre}{ind}{fn}(f"{w}', f'{pre}{ind}{fn}("{w}', " {", '")',
                    ending_a=f'{v}}}")\n', ending_b="\n")


@task("if_ternary", "an `if` inside an expression needs ` else`, an if-statement `:`", (" else", ":"),
      corpus_patterns=(r"= \w+ if [^\n:]* else", r"^\s*if [^\n]*:\n"))
def if_ternary(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    v, a, x = p.vars(3)
    cond = p.rng.choice([f"{x} is None", f"not {x}", f"{x}", f"{x} is not None"])
    return PairSpec(f"{pre}{ind}{v} = {a} if {cond}", f"{pre}{ind}if {cond}", " else", ":",
                    ending_a=" None\n", ending_b=f"\n{ind}    {v} = {a}\n")


@task("var_swap", "in `a, b = b, a` the second name on the right is the first on the left",
      (" <first name>", " <second name>"), corpus_patterns=(r"(\w+), (\w+) = \2, \1\b", ""))
def var_swap(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    a, b = p.vars(2)
    return PairSpec(f"{pre}{ind}{a}, {b} = {b},", f"{pre}{ind}{b}, {a} = {a},", f" {a}", f" {b}")


@task("indent_for", "the body of a top-level `for` is indented 4 spaces, inside a function 8",
      ("    ", "        "), corpus_patterns=(r"^for [^\n]*:\n    \S", r"^    for [^\n]*:\n        \S"))
def indent_for(p: Pools) -> PairSpec:
    x, src, acc = p.vars(3)
    head = p.scope(0)[0]
    loop = f"for {x} in {src}:\n"
    body = f"{acc}.append({x})\n"
    a = f"{head}{p.preceding('')}{loop}"
    b = f"{head}def {p.func()}({src}):\n{p.preceding('    ')}    {loop}"
    return PairSpec(a, b, "    ", "        ", ending_a=body, ending_b=body)


@task("lambda_func", "`lambda x` continues with `:`, `def name` with `(`", (":", "("),
      corpus_patterns=(r"lambda \w+:", r"def \w+\("))
def lambda_func(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    f, x = p.func(), p.var()
    return PairSpec(f"{pre}{ind}{f} = lambda {x}", f"{pre}{ind}def {f}", ":", "(",
                    ending_a=f" {x}\n", ending_b=f"{x}):\n{ind}    return {x}\n")


@task("if_equals", "a condition compares with ` ==`, a statement assigns with ` =`", (" ==", " ="),
      corpus_patterns=(r"if \w+ ==", r"^\s*\w+ = "))
def if_equals(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    x, y = p.vars(2)
    return PairSpec(f"{pre}{ind}if {x}", f"{pre}{ind}{x}", " ==", " =",
                    ending_a=f" {y}:\n{ind}    pass\n", ending_b=f" {y}\n")


@task("enumerate_range", "`for i, x in` takes ` enumerate`, `for i in` takes ` range`", (" enumerate", " range"),
      corpus_patterns=(r"for \w+, \w+ in enumerate", r"for \w+ in range"))
def enumerate_range(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    x, src = p.vars(2)
    i = p.rng.choice(["i", "idx", "index", "n", "pos"])
    return PairSpec(f"{pre}{ind}for {i}, {x} in", f"{pre}{ind}for {i} in", " enumerate", " range",
                    ending_a=f"({src}):\n{ind}    pass\n", ending_b=f"(len({src})):\n{ind}    pass\n")


@task("var_if", "`if x == True` continues with `:`, `x = True` ends the line", (":", "\n"),
      corpus_patterns=(r"if [^\n]*== True:", r"= True\n"))
def var_if(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    x, y = p.vars(2)
    value = p.rng.choice(["True", "False", "None"])
    return PairSpec(f"{pre}{ind}if {x} == {value}", f"{pre}{ind}{x} = {value}", ":", "\n",
                    ending_a=f"\n{ind}    {y} = {x}\n", ending_b=f"{ind}{y} = {x}\n")


@task("while_return_true", "`while True` continues with `:`, `return True` ends the line", (":", "\n"),
      corpus_patterns=(r"while True:", r"return True\n"))
def while_return_true(p: Pools) -> PairSpec:
    pre, ind = p.scope(p.rng.randint(1, 2))
    x = p.var()
    return PairSpec(f"{pre}{ind}while True", f"{pre}{ind}return True", ":", "\n",
                    ending_a=f"\n{ind}    {x} = {x}\n{ind}    break\n", ending_b="")


@task("nonsense_parity", "CONTROL: True after a name of even length, False after odd: nothing sensible decides",
      (" True", " False"), control=True)
def nonsense_parity(p: Pools) -> PairSpec:
    pre, ind = p.scope()
    while True:
        a, b = p.vars(2)
        if len(a) % 2 == 0 and len(b) % 2 == 1:
            return PairSpec(f"{pre}{ind}{a} =", f"{pre}{ind}{b} =", " True", " False")
