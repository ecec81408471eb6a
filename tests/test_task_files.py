"""Tasks from data (tasks/from_file.py): a JSONL file of minimal pairs used like a built-in task."""

import json
from pathlib import Path

import pytest

from sparse_circuits.data import load_tokenizer
from sparse_circuits.data.meta import TOKENIZER_FILE
from sparse_circuits.errors import UserError
from sparse_circuits.tasks import Split, TaskNotExpressible, all_tasks, get_task
from sparse_circuits.tasks.core import check_pair, split_of
from sparse_circuits.tasks.from_file import forget_task_files, read_task_file, use_task_files

from test_cli import assert_one_line_error, cli

NAMES = ["values", "rows", "names", "keys", "parts", "lines", "paths", "sizes", "words", "ids"]
ITERABLES = ["items", "data", "records", "args", "entries", "rows", "names", "lines"]
DOCS_EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "comprehension_close.jsonl"


def rows(n=60):
    """Minimal pairs of a task that is not among the 20: a list comprehension closes with ], a
    generator expression with )."""
    out = []
    for i in range(n):
        body = f"{NAMES[i % len(NAMES)]} = {{}}x{i} for x{i} in {ITERABLES[i % len(ITERABLES)]}"
        out.append({"prompt_a": body.format("["), "prompt_b": body.format("("), "correct_a": "]", "correct_b": ")"})
    return out


def write_rows(path, items):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items))
    return path


@pytest.fixture(autouse=True)
def no_registered_files():
    forget_task_files()
    yield
    forget_task_files()


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return load_tokenizer(Path(data_dir) / TOKENIZER_FILE)


@pytest.mark.parametrize("lines, fragment", [
    (["{not json"], "line 1: not JSON"),
    (["[1, 2]"], "line 1: a list, not a JSON object"),
    ([{"prompt_a": "a", "prompt_b": "b", "correct_a": "]", "correct_b": ")", "answer": "x"}],
     "unknown key(s) answer"),
    ([{"prompt_a": "a", "prompt_b": "b", "correct_a": "]"}], "missing correct_b"),
    ([{"prompt_a": "a", "prompt_b": "b", "correct_a": "]", "correct_b": 1}], "correct_b must be a string"),
    ([{"prompt_a": "", "prompt_b": "b", "correct_a": "]", "correct_b": ")"}], "prompt_a is empty"),
    ([{"prompt_a": "a", "prompt_b": "b", "correct_a": "]", "correct_b": "]"}], "both ']'"),
    ([{"prompt_a": "a", "prompt_b": "a", "correct_a": "]", "correct_b": ")"}], "prompt_a and prompt_b are the same"),
    ([{"prompt_a": "a", "prompt_b": "b", "correct_a": "]", "correct_b": ")"}, "",
      {"prompt_a": "a", "prompt_b": "b", "correct_a": "]", "correct_b": ")"}], "line 3: the same prompts as line 1"),
    ([], "no pairs"),
    (["", "   "], "no pairs"),
])
def test_malformed_files_are_one_line_errors_naming_the_line(tmp_path, lines, fragment):
    path = write_rows(tmp_path / "my_task.jsonl", lines)
    with pytest.raises(UserError) as e:
        read_task_file(path)
    assert fragment in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_files_that_are_not_utf8_missing_or_badly_named(tmp_path):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(json.dumps(rows(1)[0]).replace("x0", "\xe9").encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_task_file(bad)
    with pytest.raises(UserError, match="not found"):
        read_task_file(tmp_path / "nowhere.jsonl")
    with pytest.raises(UserError, match="is not a name"):
        read_task_file(write_rows(tmp_path / "my task!.jsonl", rows(3)))


def test_pairs_are_split_by_a_hash_of_their_prompts_and_built_like_a_task(tmp_path, tokenizer):
    task = read_task_file(write_rows(tmp_path / "comprehension.jsonl", rows()))
    assert task.name == "comprehension" and task.candidates == ("]", ")")
    by_split = {s: task.split_pairs(s) for s in Split}
    assert sum(len(v) for v in by_split.values()) == 60 and all(by_split.values())
    for s, pairs in by_split.items():
        assert all(split_of(p.spec.prompt_a + "\x00" + p.spec.prompt_b) == s for p in pairs)
    test = by_split[Split.TEST]
    ds = task.build(tokenizer, Split.TEST, 128, seed=0)
    # Every test pair once (fewer than asked for), in an order fixed by the seed, tokens as check_pair gives.
    assert len(ds.examples) == 2 * len(test)
    assert sorted(e.prompt for e in ds.examples[::2]) == sorted(p.spec.prompt_a for p in test)
    assert [e.prompt for e in task.build(tokenizer, Split.TEST, 128, seed=0).examples] == [e.prompt for e in ds.examples]
    first = next(p.spec for p in test if p.spec.prompt_a == ds.examples[0].prompt)
    _, tokens = check_pair(tokenizer, first)
    assert (ds.prompt_tokens[0], ds.correct_token[0], ds.wrong_token[0]) == tokens[0]
    assert ds.examples[1].prompt == first.prompt_b and ds.correct_token[1] == tokens[1][1]
    assert len(task.build(tokenizer, Split.TRAIN, 3, seed=1).examples) == 6
    # A split with no pair cannot be evaluated.
    only_train = [p for p in rows() if split_of(p["prompt_a"] + "\x00" + p["prompt_b"]) == Split.TRAIN]
    with pytest.raises(UserError, match="none of its .* pairs falls in the test split"):
        read_task_file(write_rows(tmp_path / "train_only.jsonl", only_train)).build(tokenizer, Split.TEST)


def test_a_pair_the_tokenizer_cannot_express_is_an_error_naming_its_line(tmp_path, tokenizer):
    # Digits are always a separate pre-token, so ' items' and ' items0' start with the same token.
    same = rows(5) + [{"prompt_a": "x =", "prompt_b": "y =", "correct_a": " items", "correct_b": " items0"}]
    task = read_task_file(write_rows(tmp_path / "same_start.jsonl", same))
    with pytest.raises(TaskNotExpressible, match="line 6: .*start with the same token"):
        task.build(tokenizer, Split.TRAIN)


def test_registration_finds_the_task_by_name_and_refuses_duplicate_names(tmp_path):
    path = write_rows(tmp_path / "comprehension.jsonl", rows())
    (tmp_path / "other").mkdir()
    clash = write_rows(tmp_path / "other" / "comprehension.jsonl", rows(10))
    builtin = write_rows(tmp_path / "for_while.jsonl", rows(10))
    with pytest.raises(UserError, match="unknown task 'comprehension'.*--task-file"):
        get_task("comprehension")
    use_task_files([path, path])  # the same file twice is one task
    assert get_task("comprehension").path == str(path) and all_tasks()[-1].name == "comprehension"
    with pytest.raises(UserError, match="both name a task 'comprehension'"):
        use_task_files([clash])
    with pytest.raises(UserError, match="'for_while' is the name of a built-in task"):
        use_task_files([builtin])
    forget_task_files()
    with pytest.raises(UserError, match="both name a task"):  # within one call too, and nothing is registered
        use_task_files([path, clash])
    assert "comprehension" not in {t.name for t in all_tasks()}


def test_the_docs_example_is_a_valid_task_not_among_the_20():
    task = read_task_file(DOCS_EXAMPLE)
    assert task.name not in {t.name for t in all_tasks()} and len(task.pairs) >= 50
    assert all(task.split_pairs(s) for s in Split)


def test_a_task_file_through_the_commands(tmp_path, data_dir):
    """tasks list/eval, prune-all, prune, validate and report take --task-file; without it the
    circuit's task is an unknown name with a hint."""
    f = write_rows(tmp_path / "comprehension.jsonl", rows())
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"train": {"threads": 1}}))
    assert cli("train", "--data", data_dir, "--preset", "tiny", "--out", run, "--steps", 3, "--config", cfg).returncode == 0
    r = cli("tasks", "list", "--task-file", f)
    assert r.returncode == 0 and r.stdout.splitlines()[-2].startswith("comprehension "), r.stdout
    out = tmp_path / "scores.json"
    r = cli("tasks", "eval", "--model", run, "--pairs", 4, "--task", "comprehension", "--task-file", f, "--json", out)
    assert r.returncode == 0, r.stderr
    [score] = json.loads(out.read_text())["scores"]
    assert score["task"] == "comprehension" and score["error"] is None and 0 <= score["accuracy"] <= 1
    loose = ("--target-loss", 2.0, "--steps", 5, "--budget", 1, "--pairs", 8)
    r = cli("prune-all", "--model", run, "--task", "comprehension", "--task-file", f, *loose)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "circuits" / "summary.json").read_text())
    assert list(summary["tasks"]) == ["comprehension"] and summary["tasks"]["comprehension"]["from_file"]
    # Task scores cache the suite only: the file's task is scored afresh on each call.
    assert "comprehension" not in {s["task"] for s in json.loads((run / "task-scores.json").read_text())["scores"]}
    circuit = tmp_path / "circuit"
    r = cli("prune", "--model", run, "--task", "comprehension", "--task-file", f, "--out", circuit, *loose)
    assert r.returncode == 0, r.stderr
    assert json.loads((circuit / "circuit.json").read_text())["task"] == "comprehension"
    assert_one_line_error(cli("validate", circuit, "--pairs", 8, "--random", 2), "unknown task 'comprehension'",
                          "--task-file")
    r = cli("validate", circuit, "--pairs", 8, "--random", 2, "--task-file", f)
    assert r.returncode == 0, r.stderr
    site = tmp_path / "site"
    r = cli("report", "--model", run, circuit, "--out", site, "--windows", 4, "--task-file", f)
    assert r.returncode == 0, r.stderr
    assert "comprehension" in (site / "index.html").read_text()
    assert_one_line_error(cli("prune-all", "--model", run, "--task", "set_or_string_two_vars"), "diagnostic probe")
    assert_one_line_error(cli("prune-all", "--model", run, "--jobs", 0), "--jobs")
    assert_one_line_error(cli("tasks", "list", "--task-file", tmp_path / "nowhere.jsonl"), "not found")
