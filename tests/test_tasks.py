import math

import pytest
import torch

from sparse_circuits.config import ModelConfig
from sparse_circuits.data import EOT, train_tokenizer
from sparse_circuits.model import GPT
from sparse_circuits.tasks import Split, Task, TaskNotExpressible, all_tasks, get_task
from sparse_circuits.tasks.core import PairSpec, check_pair, parses, split_pool
from sparse_circuits.tasks.evaluate import TaskTensors, all_logit_diffs, score_logit_diffs, score_task, task_loss
from sparse_circuits.tasks.pools import POOLS
from sparse_circuits.tasks.registry import diagnostic_tasks

TASKS = all_tasks()
DIAGNOSTICS = diagnostic_tasks()


@pytest.fixture(scope="module")
def tokenizer():
    """A BPE trained on the tasks' own text (all splits) plus some code, so names become tokens."""
    texts = [e.prompt + e.correct + e.ending for t in TASKS for s in Split for e in t.examples(s, 40, 1)]
    return train_tokenizer(texts, 1500)


def test_suite_has_the_20_paper_tasks_and_a_control():
    names = {t.name for t in TASKS if not t.control}
    assert len(names) == 20
    assert {"single_double_quote", "bracket_counting", "set_or_string_fixedvarname", "while_return_true"} <= names
    assert any(t.control for t in TASKS)


def test_diagnostic_probes_stay_out_of_the_suite_but_are_found_by_name(tokenizer):
    names = {t.name for t in DIAGNOSTICS}
    assert "set_or_string_two_vars" in names and not names & {t.name for t in TASKS}
    probe = get_task("set_or_string_two_vars")
    assert probe.diagnostic and not probe.control
    ds = probe.build(tokenizer, Split.TEST, 16, 0)
    assert len(ds.examples) == 32
    for pair in probe.draw_pairs(Split.TEST, 50, 0):
        # Both prompts hold the same definitions (a set and a string, either order) and differ only in
        # the name used last: "the nearest definition" answers both alike.
        head_a, _, used_a = pair.prompt_a.rpartition(" ")
        head_b, _, used_b = pair.prompt_b.rpartition(" ")
        assert head_a == head_b and used_a != used_b
        assert f"{used_a} = set()" in head_a and f"{used_b} = " in head_b and f"{used_b} = set()" not in head_b


@pytest.mark.parametrize("task", TASKS + DIAGNOSTICS, ids=lambda t: t.name)
def test_every_prompt_is_real_python(task):
    for split in Split:
        for ex in task.examples(split, 30, seed=3):
            assert parses(ex), (task.name, split, ex.prompt + ex.correct + ex.ending)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_datasets_are_fixed_by_the_seed(task):
    assert task.examples(Split.TEST, 10, seed=5) == task.examples(Split.TEST, 10, seed=5)
    assert task.examples(Split.TEST, 10, seed=5) != task.examples(Split.TEST, 10, seed=6)


def test_pools_split_disjointly():
    for name, items in POOLS.items():
        parts = [set(split_pool(items, s)) for s in Split]
        assert set().union(*parts) == set(items), name
        assert sum(len(p) for p in parts) == len(items), name


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_splits_share_no_prompt(task):
    prompts = {s: {e.prompt for e in task.examples(s, 40, 0)} for s in Split}
    assert not prompts[Split.TRAIN] & prompts[Split.TEST]
    assert not prompts[Split.VAL] & prompts[Split.TEST]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_boundary_rule_holds_for_built_datasets(task, tokenizer):
    ds = task.build(tokenizer, Split.TEST, 16, seed=0)
    assert len(ds.examples) == 32
    for ex, prompt_ids, c, w in zip(ds.examples, ds.prompt_tokens, ds.correct_token, ds.wrong_token):
        full = tokenizer.encode(ex.prompt + ex.correct + ex.ending).ids
        assert full[:len(prompt_ids)] == prompt_ids
        assert full[len(prompt_ids)] == c and c != w
    # Members of a pair alternate A, B and swap their candidates.
    assert [e.label for e in ds.examples[:4]] == [0, 1, 0, 1]
    assert ds.correct_token[0] == ds.wrong_token[1] or task.name in ("class_init", "var_swap", "else_elif")


def quote_task(prompt_end: str) -> Task:
    return Task("merging_quote", "test task", ('")', "')"), lambda p: PairSpec(
        f"x = f{prompt_end}", f"y = f{prompt_end}", '"a")', "'a')"))


def test_tokenizer_that_merges_across_the_boundary_is_an_error(tokenizer):
    # The paper's regex makes `("` one pre-token, so a prompt ending in `(` can never be a prefix.
    spec = quote_task("(").generate(None)
    problem, _ = check_pair(tokenizer, spec)
    assert "merge across the boundary" in problem
    with pytest.raises(TaskNotExpressible, match="task 'merging_quote' cannot be expressed.*'x = f\\('"):
        quote_task("(").build(tokenizer, Split.TEST, 4)
    # The same task cut before the merge is fine.
    ds = Task("quote_ok", "", ('"', "'"), lambda p: PairSpec('x = f("a', "x = f('a", '")', "')")).build(
        tokenizer, Split.TEST, 2)
    assert len(ds.examples) == 4


def test_candidates_with_the_same_first_token_are_an_error(tokenizer):
    # Digits are always a separate pre-token, so ' items' and ' items0' share their first token.
    same = Task("same_start", "", ("a", "b"), lambda p: PairSpec("x =", "y =", " items", " items0"))
    with pytest.raises(TaskNotExpressible, match="start with the same token"):
        same.build(tokenizer, Split.TEST, 2)


def test_scores_on_hand_made_logits():
    diff = torch.tensor([2.0, -1.0, 0.0, 4.0])
    loss, acc, mean_diff = score_logit_diffs(diff)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2) + math.log1p(math.exp(-4))) / 4
    assert loss == pytest.approx(expected)
    assert acc == 0.625 and mean_diff == pytest.approx(1.25)  # the tie counts half
    # The loss depends only on the difference of the two candidate logits, never summed over a pair.
    c = torch.tensor([3.0, 0.0])
    w = torch.tensor([1.0, 1.0])
    assert float(task_loss(c, w)) == pytest.approx(score_logit_diffs(c - w)[0])
    assert float(task_loss(c + 7, w + 7)) == pytest.approx(float(task_loss(c, w)))


def test_padding_and_batching_do_not_change_scores(tokenizer):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, d_model=32, d_head=16, d_mlp=64, context=64,
                            vocab_size=tokenizer.get_vocab_size())).eval()
    ds = get_task("single_double_quote").build(tokenizer, Split.TEST, 8)
    pad = tokenizer.token_to_id(EOT)
    tt = TaskTensors(ds, model.cfg.context, pad)
    batched = all_logit_diffs(model, tt, batch_size=16)
    single = all_logit_diffs(model, tt, batch_size=1)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    # And they equal a direct forward on each prompt alone.
    ids = torch.tensor([ds.prompt_tokens[3][-64:]])
    with torch.no_grad():
        logits = model(ids)[0, -1]
    assert float(batched[3]) == pytest.approx(float(logits[ds.correct_token[3]] - logits[ds.wrong_token[3]]), abs=1e-5)
    score = score_task(model, ds, pad)
    assert score.n == 16 and 0 <= score.accuracy <= 1


def test_unknown_task_is_an_error():
    from sparse_circuits.errors import UserError

    with pytest.raises(UserError, match="unknown task 'quotes'"):
        get_task("quotes")


def test_corpus_pattern_counts():
    from sparse_circuits.tasks.evaluate import corpus_pattern_counts

    text = 'print("a")\nprint(\'b\')\nx = f("c")\nwhile True:\n    return True\n'
    counts = corpus_pattern_counts([get_task("single_double_quote"), get_task("while_return_true"),
                                    get_task("nonsense_parity")], text)
    assert counts == {"single_double_quote": (2, 1), "while_return_true": (1, 1), "nonsense_parity": (None, None)}


def test_inexpressible_task_is_reported_not_fatal_in_a_suite_evaluation(tokenizer):
    from sparse_circuits.tasks.evaluate import evaluate_tasks

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, d_model=32, d_head=16, d_mlp=64, context=64,
                            vocab_size=tokenizer.get_vocab_size())).eval()
    scores = evaluate_tasks(model, tokenizer, [quote_task("("), get_task("for_while")], n_pairs=4, progress=False)
    assert "cannot be expressed" in scores[0].error and math.isnan(scores[0].loss)
    assert scores[1].error is None and scores[1].n == 8
