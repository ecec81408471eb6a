"""The simple-Python generator (v2: coherent, typed programs, issue 26; v1 kept), corpus mixing and the
contamination report (issue 10)."""

import ast
import itertools
import re

import numpy as np
import pytest

from sparse_circuits.data import TokenData, load_tokenizer, prepare_data
from sparse_circuits.data.coherence import Kind, analyse, analyse_all
from sparse_circuits.data.synthetic import GENERATOR_VERSION, generate_programs
from sparse_circuits.errors import UserError
from sparse_circuits.tasks.contamination import WindowHashes, contamination_report, sequence_hash
from sparse_circuits.tasks import Split, get_task

PROGRAMS = 400


@pytest.fixture(scope="module")
def programs():
    return list(itertools.islice(generate_programs(seed=3), PROGRAMS))


def test_generator_is_deterministic_for_a_seed(programs):
    assert GENERATOR_VERSION == 2
    assert list(itertools.islice(generate_programs(seed=3), 20)) == programs[:20]
    assert list(itertools.islice(generate_programs(seed=4), 20)) != programs[:20]
    v1 = list(itertools.islice(generate_programs(3, version=1), 20))
    assert v1 == list(itertools.islice(generate_programs(3, version=1), 20)) and v1 != programs[:20]
    with pytest.raises(ValueError, match="unknown generator version"):
        next(generate_programs(0, version=7))


# -- v2: every name is used as what it holds ----------------------------------------------------------

@pytest.mark.parametrize("source, kind, use", [
    ("s = 'abc'\ns.add(1)\n", Kind.STR, ".add"),
    ("s = set()\ns += 'x'\n", Kind.SET, "+="),
    ("with open(p) as f:\n    f.write('x')\n", Kind.FILE_READ, ".write"),
    ("f = open(p, 'w')\ntext = f.read()\n", Kind.FILE_WRITE, ".read"),
    ("n = 3\nfor x in n:\n    pass\n", Kind.INT, "for ... in"),
    ("n = 0\nn += 'a'\n", Kind.INT, "+="),
    ("d = {}\nd.append(1)\n", Kind.DICT, ".append"),
    ("class A:\n    def __init__(self):\n        self.seen = set()\n\n    def f(self, x):\n        self.seen.append(x)\n",
     Kind.SET, ".append"),
])
def test_the_coherence_checker_finds_each_kind_of_misuse(source, kind, use):
    (v,) = analyse(source).violations
    assert (v.kind, v.use) == (kind, use)


def test_the_checker_accepts_coherent_code_and_rebinding():
    ok = ("s = set()\ns.add(1)\ns |= {2}\nt = ''\nt += 'a'\nt = t.upper()\nitems = []\nitems.append(t)\n"
          "with open(p, 'w') as f:\n    f.write(t)\nwith open(p) as f:\n    for line in f:\n        items.append(line)\n"
          "s = 'now a string'\ns += '!'\nwords = {w: w.upper() for w in items}\n")
    assert analyse(ok).violations == []


def test_v2_programs_use_every_name_as_what_it_holds(programs):
    uses = analyse_all(programs)
    assert uses.violations == [], [str(v) for v in uses.violations[:5]]
    assert sum(uses.bindings.values()) > 20 * len(programs) / 4  # the checker saw many typed bindings
    # ... while v1's names take any use (the reason for v2): the same checker flags them.
    v1 = analyse_all(itertools.islice(generate_programs(3, version=1), PROGRAMS))
    assert len(v1.violations) > len(programs) / 4


def test_v2_next_uses_follow_the_type(programs):
    nxt = analyse_all(programs).next_uses

    def share(kind, label):
        total = sum(n for (k, _), n in nxt.items() if k == kind)
        return nxt[(kind, label)] / total

    assert share(Kind.SET, ".add") > 0.4 and nxt[(Kind.SET, " +=")] == 0
    assert share(Kind.STR, " +=") > 0.3 and nxt[(Kind.STR, ".add")] == 0
    assert share(Kind.LIST, ".append") > 0.25 and nxt[(Kind.LIST, ".add")] == 0
    assert share(Kind.FILE_WRITE, ".write") == 1.0
    assert share(Kind.FILE_READ, ".read") + share(Kind.FILE_READ, "for ... in") > 0.6


def _functions(programs, prefix_pattern):
    for text in programs:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and re.match(prefix_pattern, node.name):
                yield node, ast.get_source_segment(text, node)


def test_v2_functions_do_what_their_names_say(programs):
    loaders = list(_functions(programs, r"(load|read)_"))
    savers = list(_functions(programs, r"(save|write)_"))
    assert len(loaders) > 20 and len(savers) > 20
    for _, src in loaders:
        assert "open(" in src and not re.search(r"open\([^)]*['\"][wax]['\"]", src) and "return" in src, src
        assert ".read" in src or "for line in f" in src, src
    for _, src in savers:
        assert re.search(r"open\([^)]*['\"][wa]['\"]\)", src) and ".write(" in src, src
    for node, src in _functions(programs, r"(is|has|contains|check)_"):
        returns = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
        assert returns and all(isinstance(v, (ast.Constant, ast.Compare)) or True for v in returns)
        assert "return True" in src or " in self." in src or "return " in src


def test_v2_classes_store_their_parameters_and_methods_use_them(programs):
    classes = [n for t in programs for n in ast.walk(ast.parse(t)) if isinstance(n, ast.ClassDef)]
    assert len(classes) > 30
    for cls in classes:
        init = next(b for b in cls.body if isinstance(b, ast.FunctionDef) and b.name == "__init__")
        params = [a.arg for a in init.args.args[1:]]
        stored = {t.attr: v for s in init.body if isinstance(s, ast.Assign)
                  for t in s.targets if isinstance(t, ast.Attribute) for v in [s.value]}
        for p in params:  # self.x = x (or a default for x when it is None)
            assert p in stored and p in ast.unparse(stored[p]), (cls.name, p)
        methods = [b for b in cls.body if isinstance(b, ast.FunctionDef) and b.name not in ("__init__", "__repr__")]
        used = {n.attr for m in methods for n in ast.walk(m) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "self"}
        assert not methods or used & set(stored), cls.name


def _occurrences_per_bound_name(programs) -> list[int]:
    out = []
    for text in programs:
        tree = ast.parse(text)
        names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        out += [names.count(n) for n in stored]
    return out


def test_v2_names_recur_and_swaps_keep_both_alive(programs):
    swaps = kept = 0
    for text in programs:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^\s*(\w+), (\w+) = \2, \1$", line)
            if m:
                swaps += 1
                later = "\n".join(lines[i + 1:])
                kept += all(re.search(rf"\b{n}\b", later) for n in m.groups())
    assert swaps > 10 and kept / swaps > 0.3
    # A bound name is used again, often several times (v1 left about half of its names unused).
    v2 = _occurrences_per_bound_name(programs)
    v1 = _occurrences_per_bound_name(itertools.islice(generate_programs(3, version=1), PROGRAMS))
    share = lambda xs, f: sum(map(f, xs)) / len(xs)  # noqa: E731
    assert share(v2, lambda n: n == 1) < 0.3 < share(v1, lambda n: n == 1)
    assert share(v2, lambda n: n >= 3) > 0.4 > share(v1, lambda n: n >= 3)


def test_every_generated_program_parses(programs):
    for text in programs:
        ast.parse(text)  # raises on the first one that does not


def _has(programs, predicate) -> bool:
    return any(predicate(tree, text) for tree, text in programs)


def test_every_listed_construct_occurs(programs):
    parsed = [(ast.parse(t), t) for t in programs]
    nodes = [(list(ast.walk(tree)), text) for tree, text in parsed]

    def any_node(kind, cond=lambda n: True):
        return any(isinstance(n, kind) and cond(n) for ns, _ in nodes for n in ns)

    def any_text(pattern):
        return any(re.search(pattern, text, re.MULTILINE) for _, text in nodes)

    checks = {
        "function with defaults": any_node(ast.FunctionDef, lambda n: n.args.defaults),
        "keyword argument in a call": any_node(ast.Call, lambda n: n.keywords),
        "class with __init__": any_node(ast.ClassDef, lambda n: any(
            isinstance(b, ast.FunctionDef) and b.name == "__init__" for b in n.body)),
        "self.x = x": any_text(r"self\.(\w+) = \1$"),
        "for loop": any_node(ast.For),
        "while loop with a condition": any_node(ast.While, lambda n: not isinstance(n.test, ast.Constant)),
        "while True": any_text(r"^\s*while True:$"),
        "if/elif/else": any_text(r"^\s*elif .*:$") and any_text(r"^\s*else:$"),
        "ternary": any_node(ast.IfExp),
        "list comprehension": any_node(ast.ListComp),
        "dict comprehension": any_node(ast.DictComp),
        "with open(...) as f": any_text(r"with open\(.*\) as \w+:"),
        "f = open(...)": any_text(r"^\s*\w+ = open\("),
        "write mode": any_text(r"open\([^)]*['\"]w['\"]\)"),
        "read mode": any_text(r"open\([^)]*['\"]r['\"]\)"),
        "dict literal": any_node(ast.Dict, lambda n: n.keys),
        "list literal": any_node(ast.List, lambda n: n.elts),
        "set literal or set()": any_text(r"set\(\)") and any_node(ast.Set),
        "nested list": any_node(ast.List, lambda n: any(isinstance(e, ast.List) for e in n.elts)),
        "f-string": any_node(ast.JoinedStr),
        "double-quoted string": any_text(r'[(=] "\w'),
        "single-quoted string": any_text(r"[(=] '\w"),
        "lambda": any_node(ast.Lambda),
        "swap": any_text(r"^\s*(\w+), (\w+) = \2, \1$"),
        "enumerate": any_text(r"for \w+, \w+ in enumerate\("),
        "range": any_text(r"for \w+ in range\("),
        "try/except": any_node(ast.Try),
        "comment": any_text(r"^\s*# "),
        "docstring": any_node(ast.FunctionDef, lambda n: ast.get_docstring(n) is not None),
        "set .add": any_text(r"\w+\.add\("),
        "string +=": any_text(r"\w+ \+= (\w+|'|\")"),
        "== True": any_text(r"== True"),
        "return True": any_text(r"return True$"),
        "top-level for (a script)": any_text(r"^for "),
        "if __name__": any_text(r'^if __name__ == "__main__":'),
    }
    missing = [name for name, ok in checks.items() if not ok]
    assert not missing, missing


def test_generator_shares_no_pools_with_the_tasks():
    import sparse_circuits.data.synthetic as synthetic

    tree = ast.parse(open(synthetic.__file__, encoding="utf-8").read())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "tasks" in m], imported


def _synthetic_tokens(meta) -> int:
    return meta.synthetic.tokens


def test_token_budget_is_met_by_whole_programs(tmp_path, corpus_dir):
    meta = prepare_data([str(corpus_dir), "synthetic"], tmp_path / "d", vocab_size=300, val_frac=0.2,
                        synthetic_tokens=20_000, log=lambda *_: None)
    tok = load_tokenizer(tmp_path / "d" / "tokenizer.json")
    longest = max(len(tok.encode(p).ids) + 1 for p in itertools.islice(generate_programs(0), meta.synthetic.files))
    assert 20_000 <= _synthetic_tokens(meta) < 20_000 + longest
    assert meta.tokens.train == np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).size


def test_share_budget_and_the_real_validation_split(tmp_path, corpus_dir):
    real = prepare_data(str(corpus_dir), tmp_path / "real", vocab_size=300, val_frac=0.2, log=lambda *_: None)
    mix = prepare_data([str(corpus_dir), "synthetic"], tmp_path / "mix", vocab_size=300, val_frac=0.2,
                       synthetic_share=0.5, log=lambda *_: None)
    share = mix.synthetic.share_of_train_tokens
    assert 0.5 <= share < 0.6
    # Validation stays the real files, the same ones as without generated code.
    assert mix.val_files == real.val_files and mix.chars.val == real.chars.val
    tok = load_tokenizer(tmp_path / "mix" / "tokenizer.json")
    assert "synthetic/" not in " ".join(mix.val_files)
    val_text = tok.decode(TokenData(tmp_path / "mix").val.astype(np.int64).tolist())
    assert "def func_" in val_text  # the test corpus's own code


def test_file_budget_and_synthetic_only(tmp_path):
    meta = prepare_data(["synthetic"], tmp_path / "s", vocab_size=300, synthetic_files=60, log=lambda *_: None)
    assert meta.synthetic.files == 60 and meta.files.train == 60
    assert meta.files.val >= 1 and meta.split.validation.startswith("generated")
    again = prepare_data(["synthetic"], tmp_path / "s2", vocab_size=300, synthetic_files=60, log=lambda *_: None)
    assert again.sha256["train.bin"] == meta.sha256["train.bin"]  # deterministic


def test_generator_version_is_a_data_option(tmp_path):
    v1 = prepare_data(["synthetic"], tmp_path / "v1", vocab_size=300, synthetic_files=40, synthetic_version=1,
                      log=lambda *_: None)
    v2 = prepare_data(["synthetic"], tmp_path / "v2", vocab_size=300, synthetic_files=40, log=lambda *_: None)
    assert v1.synthetic.budget["version"] == 1 and v2.synthetic.budget["version"] == 2
    assert v1.fingerprint != v2.fingerprint and v1.sha256["train.bin"] != v2.sha256["train.bin"]


@pytest.mark.parametrize("sources, kwargs, message", [
    (["synthetic"], {"synthetic_share": 0.5}, "needs a real-code source"),
    (["stdlib"], {"synthetic_tokens": 100}, "not a --corpus source"),
    (["synthetic"], {"synthetic_tokens": 100, "synthetic_files": 3}, "one synthetic budget"),
    (["synthetic"], {"synthetic_tokens": 0}, "must be >= 1"),
    (["synthetic", "synthetic"], {}, "given twice"),
    (["synthetic"], {"synthetic_version": 3}, "--synthetic-version 3 is unknown"),
    (["stdlib"], {"synthetic_version": 1}, "not a --corpus source"),
])
def test_bad_budgets_are_one_line_errors_and_write_nothing(tmp_path, sources, kwargs, message):
    with pytest.raises(UserError, match=message):
        prepare_data(sources, tmp_path / "d", vocab_size=300, log=lambda *_: None, **kwargs)
    assert not (tmp_path / "d").exists()


def test_window_hashes_match_sequence_hashes():
    tokens = np.random.default_rng(0).integers(0, 40, size=500).astype(np.uint16)
    windows = WindowHashes(tokens)
    for length in (1, 3, 9):
        hashes = windows.of_length(length)
        for s in (0, 17, 500 - length):
            assert hashes[s] == sequence_hash(tokens[s:s + length].tolist())


def test_contamination_finds_a_planted_test_prompt(tmp_path, corpus_dir):
    import shutil

    planted_dir = tmp_path / "corpus"
    shutil.copytree(corpus_dir, planted_dir)
    spec = get_task("while_return_true").draw_pairs(Split.TEST, 1, 0)[0]
    # Plant prompt A of the first test pair in many training files (the split is by file).
    for i, path in enumerate(sorted(planted_dir.rglob("*.py"))):
        path.write_text(path.read_text() + "\n\n" + spec.prompt_a + spec.cont_a + spec.ending_a)
    # Beside generated programs (v2), which plant nothing themselves.
    prepare_data([str(planted_dir), "synthetic"], tmp_path / "d", vocab_size=300, val_frac=0.2, synthetic_files=150,
                 log=lambda *_: None)
    report = contamination_report(tmp_path / "d", n_pairs=16, log=lambda *_: None)
    rows = {r.task: r for r in report.tasks}
    assert rows["while_return_true"].verbatim >= 1 and rows["while_return_true"].long_verbatim >= 1
    assert all(r.long_verbatim == 0 for name, r in rows.items() if name != "while_return_true")
    clean = contamination_report(tmp_path / "d", n_pairs=16, log=lambda *_: None)  # reused, same numbers
    assert [r.verbatim for r in clean.tasks] == [r.verbatim for r in report.tasks]


def test_v2_keeps_every_task_idiom_about_as_frequent_as_v1():
    """Coherence must not cost the syntax-level tasks their idioms: per character, each class's
    deciding idiom (the suite's corpus patterns) occurs at least 70% as often in v2 as in v1."""
    from sparse_circuits.tasks import all_tasks
    from sparse_circuits.tasks.evaluate import corpus_pattern_counts

    rates = {}
    for version in (1, 2):
        text = "\n".join(itertools.islice(generate_programs(5, version=version), 1500))
        rates[version] = {t: [None if n is None else n / len(text) for n in ab]
                          for t, ab in corpus_pattern_counts(all_tasks(), text).items()}
    low = [(task, old, new) for task in rates[1] for old, new in zip(rates[1][task], rates[2][task])
           if old and new is not None and new < 0.7 * old]
    assert not low, low
