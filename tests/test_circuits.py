import dataclasses
import json
import math
import re

import pytest
import torch

from sparse_circuits.circuits.edges import count_edges
from sparse_circuits.circuits.intervention import CircuitIntervention
from sparse_circuits.circuits.masks import Ablation, NodeMasks, gate_hooks
from sparse_circuits.circuits.means import node_means, task_means
from sparse_circuits.circuits.prune import (
    Calibration,
    PruneConfig,
    calibrate,
    prune,
    smallest_passing,
)
from sparse_circuits.circuits.validate import validate
from sparse_circuits.config import BigramTable, ModelConfig, Positions
from sparse_circuits.hooks import Hooks
from sparse_circuits.model import GPT
from sparse_circuits.tasks.evaluate import TaskTensors, score_logit_diffs
from sparse_circuits.tasks.evaluate import logit_diffs as model_logit_diffs

import planted


def small_model(**kw):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, d_model=32, d_head=16, d_mlp=64, context=16, vocab_size=50, **kw)).eval()


@pytest.mark.parametrize("positions", [Positions.NONE, Positions.CONCAT])
def test_all_masks_on_reproduce_the_plain_forward_exactly(positions):
    model = small_model(positions=positions)
    idx = torch.randint(0, 50, (3, 16))
    masks = NodeMasks(model)
    means = node_means(model, [idx], progress=False)
    gates = masks.gates(1.0)
    assert all(bool((g == 1).all()) for g in gates.values())
    assert torch.equal(model(idx, gate_hooks(gates, means)), model(idx))
    keep_all = {n: torch.ones(w, dtype=torch.bool) for n, w in masks.widths.items()}
    assert torch.equal(model(idx, CircuitIntervention.keeping(keep_all, means).hooks(model, idx)), model(idx))


def test_mean_ablation_substitutes_the_stored_means():
    model = small_model()
    idx = torch.randint(0, 50, (4, 16))
    means = node_means(model, [idx], progress=False)
    keep = {n: torch.ones(w, dtype=torch.bool) for n, w in NodeMasks(model).widths.items()}
    keep["1.mlp.post_act"][:] = False
    keep["0.attn.v"][3] = False
    substituted = Hooks().add("1.mlp.post_act", lambda x: means["1.mlp.post_act"].expand_as(x))
    substituted.add("0.attn.v", lambda x: torch.cat([x[..., :3], means["0.attn.v"][3].expand_as(x[..., 3:4]),
                                                       x[..., 4:]], dim=-1))
    torch.testing.assert_close(model(idx, CircuitIntervention.keeping(keep, means).hooks(model, idx)),
                               model(idx, substituted))


def test_frozen_norms_match_the_forward_they_serve():
    # With every node kept, freezing the norms changes nothing, whether the forward computes all
    # positions or only the task's last one (ln_f then sees one position per row).
    model = small_model()
    idx = torch.randint(0, 50, (4, 16))
    last = torch.tensor([3, 15, 7, 0])
    means = node_means(model, [idx], progress=False)
    keep_all = {n: torch.ones(w, dtype=torch.bool) for n, w in NodeMasks(model).widths.items()}
    frozen = CircuitIntervention.keeping(keep_all, means, freeze_norms=True)
    assert torch.equal(model(idx, frozen.hooks(model, idx)), model(idx))
    assert torch.equal(model(idx, frozen.hooks(model, idx, last), logits_at=last), model(idx, logits_at=last))
    # With a node removed, frozen norms differ from recomputed ones: the freeze is real.
    keep_all["0.mlp.post_act"][:] = False
    loose = CircuitIntervention.keeping(keep_all, means)
    frozen = CircuitIntervention.keeping(keep_all, means, freeze_norms=True)
    assert not torch.allclose(model(idx, loose.hooks(model, idx)), model(idx, frozen.hooks(model, idx)))


def test_means_are_taken_after_abstopk_at_the_mask_site():
    model = small_model()
    idx = torch.randint(0, 50, (4, 16))
    _, cache = model.run_with_cache(idx)
    means = node_means(model, [idx[:2], idx[2:]], progress=False)
    for name, acts in cache.items():
        torch.testing.assert_close(means[name], acts.reshape(-1, acts.shape[-1]).mean(0), rtol=1e-5, atol=1e-6)
    # Task means group prompts by length, so padding never enters.
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8]]
    tm = task_means(model, prompts)
    _, c3 = model.run_with_cache(torch.tensor([[1, 2, 3], [6, 7, 8]]), ["0.mlp.post_act"])
    _, c2 = model.run_with_cache(torch.tensor([[4, 5]]), ["0.mlp.post_act"])
    both = torch.cat([c3["0.mlp.post_act"].reshape(-1, 64), c2["0.mlp.post_act"].reshape(-1, 64)])
    torch.testing.assert_close(tm["0.mlp.post_act"], both.mean(0), rtol=1e-5, atol=1e-6)


def test_bisection_finds_the_minimal_k():
    curve = lambda k: 1.0 / (1 + k)  # falls with k; <= 0.15 from k = 6 on
    calls = []
    assert smallest_passing(lambda k: calls.append(k) or curve(k), 0, 1000, 0.15) == 6
    assert len(calls) <= 12  # log2(1000) evaluations, not a scan
    assert smallest_passing(lambda k: 0.0, 0, 50, 0.15) == 0
    assert smallest_passing(lambda k: 0.2 if k < 50 else 0.1, 0, 50, 0.15) == 50


def test_calibration_is_only_a_scale_and_a_per_candidate_shift():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 50)
    # Logit differences that favour candidate A by 1 everywhere and are 3x too small.
    true = torch.randn(100, generator=g).abs() + 0.5
    diffs = true / 3 + (1 - 2 * labels.float()) * 1.0
    cal = calibrate(diffs, labels)
    after = cal.apply(diffs, labels)
    assert score_logit_diffs(after)[0] < score_logit_diffs(diffs)[0]
    assert cal.shift < 0 and cal.scale > 1
    # apply() is exactly scale * diff + sign * shift, sign +1 for A prompts and -1 for B prompts.
    c = Calibration(2.0, 0.5)
    assert c.apply(torch.tensor([1.0, 1.0]), torch.tensor([0, 1])).tolist() == [2.5, 1.5]
    # A shift common to both candidates cancels in the difference: nothing to fit there.
    assert Calibration(1.0, 0.0).apply(diffs, labels).equal(diffs)


def test_edges_on_a_hand_built_model():
    cfg = ModelConfig(n_layer=2, d_model=32, d_head=16, d_mlp=64, context=8, vocab_size=10,
                      bigram_table=BigramTable.NONE)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        b0 = model.blocks[0]
        b0.attn.c_q.weight[5, 2] = 1.0     # act_in 2 -> q 5
        b0.attn.c_k.weight[5, 2] = -1.0    # act_in 2 -> k 5
        b0.attn.c_v.weight[7, 3] = 0.5     # act_in 3 -> v 7
        b0.attn.c_v.weight[8, 3] = 0.5     # v 8 is not kept: no edge
        b0.attn.c_proj.weight[4, 7] = 2.0  # v 7 -> resid_delta 4
        b0.mlp.c_fc.weight[10, 4] = 1.5    # mlp.act_in 4 -> neuron 10
        b0.mlp.c_proj.weight[6, 10] = 1.0  # neuron 10 -> mlp.resid_delta 6
    keep = {n: torch.zeros(s.width, dtype=torch.bool) for n, s in model.node_sites().items()}
    for name, i in [("0.attn.act_in", 2), ("0.attn.act_in", 3), ("0.attn.q", 5), ("0.attn.k", 5), ("0.attn.v", 7),
                    ("0.attn.resid_delta", 4), ("0.mlp.act_in", 4), ("0.mlp.post_act", 10),
                    ("0.mlp.resid_delta", 6), ("1.attn.act_in", 6), ("1.mlp.act_in", 4)]:
        keep[name][i] = True
    e = count_edges(model, keep)
    assert sorted((str(x.src), str(x.dst), x.weight) for x in e.weights) == sorted([
        ("0.attn.act_in:2", "0.attn.q:5", 1.0), ("0.attn.act_in:2", "0.attn.k:5", -1.0),
        ("0.attn.act_in:3", "0.attn.v:7", 0.5), ("0.attn.v:7", "0.attn.resid_delta:4", 2.0),
        ("0.mlp.act_in:4", "0.mlp.post_act:10", 1.5), ("0.mlp.post_act:10", "0.mlp.resid_delta:6", 1.0)])
    assert e.num_edges == 6  # edges, not nodes (11 kept)
    assert sorted((str(x.src), str(x.dst)) for x in e.residual) == sorted([
        ("0.attn.resid_delta:4", "0.mlp.act_in:4"), ("0.attn.resid_delta:4", "1.mlp.act_in:4"),
        ("0.mlp.resid_delta:6", "1.attn.act_in:6")])
    assert [(str(q), str(k)) for q, k in e.qk_pairs] == [("0.attn.q:5", "0.attn.k:5")]


def test_edges_skip_the_concatenated_position_columns():
    model = small_model(positions=Positions.CONCAT, d_pos=8)
    keep = {n: torch.ones(s.width, dtype=torch.bool) for n, s in model.node_sites().items()}
    e = count_edges(model, keep)
    # Every nonzero weight between two nodes is an edge; reads of the position channels are not.
    d = 32
    expected = sum(int(torch.count_nonzero(w)) for b in model.blocks for w in (
        b.attn.c_q.weight[:, :d], b.attn.c_k.weight[:, :d], b.attn.c_v.weight[:, :d], b.attn.c_proj.weight,
        b.mlp.c_fc.weight[:, :d], b.mlp.c_proj.weight))
    assert e.num_edges == expected
    assert all(x.src.index < d for x in e.weights if x.src.location.reads_residual)
    assert any(x.src.location.reads_residual for x in e.weights)


@pytest.fixture(scope="module")
def planted_setup():
    model = planted.planted_model()
    means = node_means(model, planted.pretraining_batches(), progress=False)
    planted.center_output(model, float(means["0.mlp.post_act"][planted.N]))
    means = node_means(model, planted.pretraining_batches(), progress=False)
    tt = TaskTensors(planted.planted_dataset(), 16, 0)
    return model, means, tt


def test_task_batches_are_padded_only_to_their_longest_prompt():
    """Batches of similar length, each cut after its longest prompt: the same logits as one forward
    over the whole padded tensor, in row order."""
    model = planted.planted_model()
    tt = TaskTensors(planted.planted_dataset(), 16, 0)
    rows = torch.argsort(tt.last)[:3]  # the shortest prompts
    idx, last = tt.inputs(rows)
    assert idx.shape[1] == int(tt.last[rows].max()) + 1 < tt.idx.shape[1] and torch.equal(last, tt.last[rows])
    with torch.no_grad():
        whole = model(tt.idx, logits_at=tt.last)
    ar = torch.arange(tt.n)
    expected = whole[ar, tt.correct] - whole[ar, tt.wrong]
    batches = []
    got = tt.per_row(lambda r: batches.append(r) or model_logit_diffs(model, tt, r), batch_size=8)
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(tt.last[b].max() - tt.last[b].min() <= 2 for b in batches)  # lengths 4-12, 16 rows per length
    loss, diffs = CircuitIntervention.keeping(None, {}).task_loss(model, tt, batch_size=8)
    assert torch.allclose(diffs, expected, atol=1e-5) and loss == pytest.approx(score_logit_diffs(expected)[0], abs=1e-5)


def found_nodes(result):
    return {n: k.nonzero().squeeze(1).tolist() for n, k in result.keep.items() if k.any()}


@pytest.mark.parametrize("options", [{}, {"tie_qk": True}, {"freeze_norms": True}, {"seed": 7, "lr": 1e-2}])
def test_pruning_recovers_exactly_the_planted_circuit(planted_setup, options):
    model, means, tt = planted_setup
    assert sum(site.width for site in model.node_sites().values()) == 288  # among 285 distractors
    result = prune(model, tt, means, PruneConfig(steps=200, **options))
    assert found_nodes(result) == planted.PLANTED
    assert result.loss <= 0.15 and result.loss_calibrated <= result.loss + 1e-9


def test_planted_circuit_validates(planted_setup):
    model, means, tt = planted_setup
    keep = {n: torch.zeros(s.width, dtype=torch.bool) for n, s in model.node_sites().items()}
    for name, idx in planted.PLANTED.items():
        keep[name][idx] = True
    zeros = {n: torch.zeros_like(m) for n, m in means.items()}
    v = validate(model, tt, keep, {Ablation.MEAN_PRETRAIN: means, Ablation.ZERO: zeros}, Ablation.MEAN_PRETRAIN,
                 target_loss=0.15)
    assert v.sufficiency.loss < 0.15 and v.sufficiency.accuracy == 1.0
    assert v.complement is not None and not v.complement.fragile
    import tempfile
    from sparse_circuits.circuits.validate import Validation
    with tempfile.TemporaryDirectory() as d:
        v.save(d)
        assert Validation.load(d) == v
    assert v.necessity.loss == pytest.approx(math.log(2), abs=0.05)
    assert v.random_circuits.min_loss > 0.5
    assert v.role_drift.per_node["0.mlp.post_act:0"] > 0.9
    assert set(v.ablation_sensitivity) == {Ablation.MEAN_PRETRAIN, Ablation.ZERO}


def test_circuit_file_round_trip(tmp_path):
    from sparse_circuits.circuits.circuit import Circuit, SearchRun, TaskSample, load_circuit
    from sparse_circuits.circuits.edges import Edge
    from sparse_circuits.circuits.prune import Calibration
    from sparse_circuits.errors import UserError
    from sparse_circuits.nodes import NodeId
    from sparse_circuits.tasks import Split

    n = NodeId.parse
    c = Circuit(task="t", model_dir="m", model_sha256="abc", config=PruneConfig(k_coef=1e-4, freeze_norms=True),
                loss=0.1, loss_calibrated=0.05, calibration=Calibration(2.0, 0.1),
                nodes=[n("0.attn.q:1"), n("0.attn.q:5"), n("1.mlp.post_act:7")],
                edges=[Edge(n("0.attn.act_in:3"), n("0.attn.q:1"), 0.5)],
                residual_links=[Edge(n("0.mlp.resid_delta:2"), n("1.attn.act_in:2"))],
                qk_pairs=[(n("0.attn.q:5"), n("0.attn.k:5"))], tau={"0.attn.q": torch.randn(32)},
                means={"0.attn.q": torch.randn(32)}, sample=TaskSample(Split.TRAIN, 4, 0),
                search=[SearchRun(3, 0.1, 1e-4, 0.02, 1.0)], loss_curve=[(0, 0.7), (3, 0.1)], seconds=1.5)
    c.save(tmp_path / "c")
    back = load_circuit(tmp_path / "c")
    assert back.num_nodes == 3 and back.num_edges == 1
    for f in ("task", "config", "nodes", "edges", "residual_links", "qk_pairs", "calibration", "sample", "search",
              "loss", "loss_calibrated", "loss_curve"):
        assert getattr(back, f) == getattr(c, f), f
    assert torch.equal(back.tau["0.attn.q"], c.tau["0.attn.q"]) and torch.equal(back.means["0.attn.q"], c.means["0.attn.q"])
    saved = json.loads((tmp_path / "c" / "circuit.json").read_text())
    assert saved["num_nodes"] == 3 and saved["format_version"] == 1
    # Hand-edited node lists and counts are one-line errors, never another node (-1 is not the last
    # channel, true is not 1, 13.7 is not 13).
    for nodes, match in (({"0.attn.q": [-1]}, "non-negative integer"), ({"0.attn.q": [True]}, "non-negative integer"),
                         ({"0.attn.q": [13.7]}, "non-negative integer"), ({"0.attn.q": ["13"]}, "non-negative integer"),
                         ({"0.attn.q": 13}, "must be a list"), (["0.attn.q:1"], "must map each site"),
                         ({"13": [1]}, "not a node site")):
        (tmp_path / "c" / "circuit.json").write_text(json.dumps(saved | {"nodes": nodes}))
        with pytest.raises(UserError, match=match):
            load_circuit(tmp_path / "c")
    (tmp_path / "c" / "circuit.json").write_text(json.dumps(saved | {"data": saved["data"] | {"seed": "abc"}}))
    with pytest.raises(UserError, match="data.seed"):
        load_circuit(tmp_path / "c")
    # A node the model lacks (a layer it does not have, a channel beyond the site) is refused where
    # masks are built, for validation and the report alike.
    from sparse_circuits.circuits.masks import keep_masks
    for node in ("0.attn.q:99999", "7.attn.q:1"):
        with pytest.raises(UserError, match="has no such node"):
            keep_masks([n(node)], {"0.attn.q": 32})
    # Saving a new circuit where another was removes what was computed from the old one.
    (tmp_path / "c" / "validation.json").write_text("{}")
    (tmp_path / "c" / "through_bridge.json").write_text("{}")
    c.save(tmp_path / "c")
    assert not (tmp_path / "c" / "validation.json").exists() and not (tmp_path / "c" / "through_bridge.json").exists()
    saved = json.loads((tmp_path / "c" / "circuit.json").read_text())
    saved["format_version"] = 99
    (tmp_path / "c" / "circuit.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="format version 99"):
        load_circuit(tmp_path / "c")


def _outcome(edges, control=False, bigram=False, status=None):
    from sparse_circuits.circuits.summary import TaskOutcome, TaskStatus

    status = status or (TaskStatus.CIRCUIT if edges is not None else TaskStatus.NO_CIRCUIT)
    return TaskOutcome(status, control, 0.1, num_nodes=None if edges is None else edges + 1, num_edges=edges,
                       bigram_decided=bigram)


def _summary(tasks, **settings):
    from sparse_circuits.circuits.summary import PruneAllSummary

    fields = {"model": "m", "weights_sha256": "a" * 64, "config": PruneConfig(), "budget": 1, "pairs": 128,
              "max_full_loss": 0.45} | settings
    return PruneAllSummary(tasks=tasks, **fields)


def test_prune_all_reuses_only_outcomes_with_the_same_weights_settings_and_files(tmp_path):
    from sparse_circuits.circuits.api import CIRCUIT_FILES, _earlier_outcomes
    from sparse_circuits.circuits.summary import TaskStatus

    _summary({"found": _outcome(2), "lost": _outcome(5),
              "skipped": _outcome(None, status=TaskStatus.NOT_ATTEMPTED)}).save(tmp_path)
    for name in CIRCUIT_FILES:
        (tmp_path / "found").mkdir(exist_ok=True)
        (tmp_path / "found" / name).write_text("{}")
    (tmp_path / "lost").mkdir()
    (tmp_path / "lost" / "circuit.json").write_text("{}")  # the rest of its files are gone
    earlier = _earlier_outcomes(tmp_path, _summary({}))
    assert set(earlier) == {"found", "skipped"} and earlier["skipped"].status == TaskStatus.NOT_ATTEMPTED
    for key, other in (("weights_sha256", "b" * 64), ("budget", 2), ("config", PruneConfig(steps=100))):
        assert _earlier_outcomes(tmp_path, _summary({}, **{key: other})) == {}
    assert _earlier_outcomes(tmp_path / "nowhere", _summary({})) == {}
    (tmp_path / "summary.json").write_text('{"tasks": null}')  # damaged: everything is pruned again
    assert _earlier_outcomes(tmp_path, _summary({})) == {}


def test_prune_all_summary_keeps_bigram_decided_tasks_and_controls_out_of_the_geometric_mean(tmp_path):
    from sparse_circuits.circuits.summary import BIGRAM_DECIDED, PruneAllSummary, bigram_decided

    assert bigram_decided(BIGRAM_DECIDED) and not bigram_decided(BIGRAM_DECIDED - 0.01) and not bigram_decided(None)
    summary = _summary({"a": _outcome(4), "b": _outcome(0),  # a 0-edge circuit counts as 1
                        "elif": _outcome(1000, bigram=True), "ctrl": _outcome(50, control=True),
                        "none": _outcome(None)})
    assert summary.geomean_edges == pytest.approx(2.0)
    assert summary.geomean_tasks == ["a", "b"] and summary.bigram_decided_tasks == ["elif"]
    assert summary.tasks_with_circuit == 3
    summary.save(tmp_path)
    assert PruneAllSummary.load(tmp_path) == summary
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["geomean_edges"] == pytest.approx(2.0) and saved["tasks"]["none"]["status"] == "no-circuit"


def test_task_outcome_reads_summaries_written_before_the_status():
    from sparse_circuits.circuits.summary import TaskOutcome, TaskStatus

    old = {"num_nodes": None, "num_edges": None, "full_model_loss": 0.6, "control": False,
           "error": "the whole model's task loss 0.600 > 0.45: not attempted"}
    assert TaskOutcome.from_dict(old).status == TaskStatus.NOT_ATTEMPTED
    assert TaskOutcome.from_dict(old | {"error": "no circuit"}).status == TaskStatus.NO_CIRCUIT
    assert TaskOutcome.from_dict(old | {"num_nodes": 3, "num_edges": 2}).status == TaskStatus.CIRCUIT


def test_shared_geomean_uses_the_same_tasks_for_every_model():
    from sparse_circuits.circuits.summary import shared_geomean

    o = _outcome
    sparse = _summary({"a": o(10), "b": o(1), "c": o(5), "elif": o(2, bigram=True), "ctrl": o(3, True)})
    dense = _summary({"a": o(40), "b": o(16), "c": o(None), "elif": o(9, bigram=True), "ctrl": o(7, True)})
    out = shared_geomean({"sparse": sparse, "dense": dense})
    assert out.tasks == ["a", "b"]  # c: no dense circuit; elif: bigram-decided; ctrl: a control
    assert out.geomean_edges["sparse"] == pytest.approx(10 ** 0.5)
    assert out.geomean_edges["dense"] == pytest.approx(640 ** 0.5)


def test_prune_all_with_min_accuracy_attempts_only_learned_tasks_and_the_controls(tmp_path, data_dir, monkeypatch):
    """Tasks below the accuracy limit are recorded as not learned (never pruned), controls are always
    pruned; the summary file, the report and the CLI say so."""
    import dataclasses

    from click.testing import CliRunner
    from conftest import tiny_config
    from sparse_circuits.circuits import api
    from sparse_circuits.circuits.summary import PruneAllSummary, TaskStatus
    from sparse_circuits.cli import main
    from sparse_circuits.errors import UserError
    from sparse_circuits.report import build_report
    from sparse_circuits.tasks import get_task
    from sparse_circuits.tasks.evaluate import load_or_evaluate_run
    from sparse_circuits.train import train

    run = tmp_path / "run"
    train(tiny_config(data_dir, steps=3), run, progress=False)
    acc = {t: s.accuracy for t, s in load_or_evaluate_run(run, progress=False).by_task().items()}
    # The test tokenizer (320 tokens) cannot express the nonsense control: one real task plays it.
    tasks = [dataclasses.replace(get_task(t), control=(t == "indent_for"))
             for t in ("for_while", "while_return_true", "indent_for")]
    monkeypatch.setattr(api, "all_tasks", lambda include_controls=True: tasks)
    cfg = PruneConfig(steps=3, target_loss=5.0, cleanup_tries=0)  # a loose target: every attempt finds a circuit
    kwargs = dict(n_pairs=8, max_full_loss=10.0, progress=False, log=lambda _: None)
    names = [t.name for t in tasks]
    hi, lo = sorted((acc["for_while"], acc["while_return_true"]), reverse=True)
    assert hi > lo
    between = (hi + lo) / 2
    s = api.prune_all(run, run / "circuits", cfg, min_accuracy=max(hi, acc["indent_for"]) + 1e-6, **kwargs)
    assert [s.tasks[t].status for t in names] == [TaskStatus.NOT_LEARNED, TaskStatus.NOT_LEARNED, TaskStatus.CIRCUIT]
    assert not (run / "circuits" / "for_while").exists() and "not learned" in s.tasks["while_return_true"].error
    assert PruneAllSummary.load(run / "circuits") == s and s.min_accuracy > hi
    s = api.prune_all(run, tmp_path / "c2", cfg, min_accuracy=between, **kwargs)
    status = {t: s.tasks[t].status for t in names}
    assert status == {"for_while": TaskStatus.CIRCUIT if acc["for_while"] == hi else TaskStatus.NOT_LEARNED,
                      "while_return_true": TaskStatus.CIRCUIT if acc["while_return_true"] == hi else TaskStatus.NOT_LEARNED,
                      "indent_for": TaskStatus.CIRCUIT}
    assert all(r.status == TaskStatus.CIRCUIT for r in api.prune_all(run, tmp_path / "c3", cfg, **kwargs).tasks.values())
    with pytest.raises(UserError, match="min-accuracy must be in"):
        api.prune_all(run, tmp_path / "c4", cfg, min_accuracy=1.5, **kwargs)
    build_report([run], [], tmp_path / "site", progress=False, snippet_windows=4, log=lambda *_: None)
    index = (tmp_path / "site" / "index.html").read_text()
    assert re.search(r"2 tasks.*not attempted, the model(&#39;|')s test accuracy is below", index, re.S)
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["prune-all", "--model", str(run), "--out", str(tmp_path / "c5"),
                                    "--min-accuracy", "1.0", "--steps", "2", "--pairs", "8", "--target-loss", "5"])
    assert res.exit_code == 0, res.output
    assert "not attempted: test accuracy" in res.output


def planted_keep(model, drop: str | None = None):
    keep = {n: torch.zeros(s.width, dtype=torch.bool) for n, s in model.node_sites().items()}
    for name, idx in planted.PLANTED.items():
        if name != drop:
            keep[name][idx] = True
    return keep


def replaced_by_hand(model, tt, keep, value_of):
    """Logit differences with every removed node set to value_of(site, batch_idx) by a plain hook,
    written here apart from CircuitIntervention and gate_hooks."""
    from sparse_circuits.hooks import Hooks
    from sparse_circuits.tasks.evaluate import logit_diffs

    out = []
    for start in range(0, tt.n, 16):
        rows = torch.arange(start, min(tt.n, start + 16))
        idx, last = tt.inputs(rows)
        hooks = Hooks()
        for name, k in keep.items():
            v = value_of(name, idx, last)

            def replace(x, k=k, v=v):
                x = x.clone()
                x[..., ~k] = v.expand_as(x)[..., ~k]
                return x
            hooks.add(name, replace)
        out.append(logit_diffs(model, tt, rows, hooks))
    return torch.cat(out)


def test_each_ablation_kind_against_an_independent_computation(planted_setup):
    """Zero and the means in closed form (0; the average over tokens), resampling as the model's own
    activations on each example's other context, and optimal constants reaching the best loss a
    circuit without its decisive node can have: ln 2 (balanced pairs, no information)."""
    from sparse_circuits.circuits.ablations import AblationInputs, ablation_values
    from sparse_circuits.circuits.prune import fit_constants
    from sparse_circuits.circuits.values import ResampledValues

    model, means, tt = planted_setup
    keep = planted_keep(model)
    through = lambda values: CircuitIntervention.keeping(keep, values).task_loss(model, tt, batch_size=16)[1]
    # zero: the registry's values are zeros, and ablating with them is setting the removed nodes to 0
    ds = planted.planted_dataset()
    inputs = AblationInputs(model, None, "", ds.prompt_tokens, progress=False)
    zero = ablation_values(inputs, [Ablation.ZERO])[Ablation.ZERO]
    assert all(not v.any() for v in zero.values())
    torch.testing.assert_close(through(zero), replaced_by_hand(model, tt, keep, lambda n, idx, last: torch.zeros(1)))
    # task mean: the plain average of each node over every token of the task's prompts
    task_mean = ablation_values(inputs, [Ablation.MEAN_TASK])[Ablation.MEAN_TASK]
    for name in ("0.mlp.post_act", "0.attn.q"):
        acts = torch.cat([model.run_with_cache(torch.tensor(p)[None])[1][name][0] for p in ds.prompt_tokens])
        torch.testing.assert_close(task_mean[name], acts.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(through(means), replaced_by_hand(model, tt, keep, lambda n, idx, last: means[n]))
    # resample: each example's removed nodes take the model's values on its drawn context
    pool = torch.cat(planted.pretraining_batches(2))
    resampled = ResampledValues(pool, seed=3)

    def on_other_context(name, idx, last):
        other = pool[resampled.draw(idx, last), : idx.shape[1]]
        return model.run_with_cache(other)[1][name]

    got = through(resampled)
    torch.testing.assert_close(got, replaced_by_hand(model, tt, keep, on_other_context))
    assert len(set(resampled.draw(tt.idx, tt.last).tolist())) > 10  # examples draw different contexts
    assert not torch.allclose(got, through(means))  # and it is not the mean
    # optimal: without its decisive neuron the circuit can at best say nothing, loss ln 2; fitted
    # constants reach it even where the mean, off-centre, does not
    model_off = planted.planted_model()  # not centred: the neuron's mean pushes channel D towards A
    means_off = node_means(model_off, planted.pretraining_batches(), progress=False)
    no_neuron = planted_keep(model_off, drop="0.mlp.post_act")
    mean_loss = CircuitIntervention.keeping(no_neuron, means_off).task_loss(model_off, tt)[0]
    fitted = fit_constants(model_off, tt, no_neuron, means_off, steps=150, lr=0.1)
    optimal_loss = CircuitIntervention.keeping(no_neuron, fitted).task_loss(model_off, tt)[0]
    assert mean_loss > math.log(2) + 0.05 and optimal_loss == pytest.approx(math.log(2), abs=0.01)


def test_pruning_under_resample_and_optimal_ablation_and_their_circuit_files(planted_setup, tmp_path):
    """Both kinds prune the planted model to its circuit; the resampled contexts and the fitted
    constants are saved with the circuit and give the same circuit loss when read back."""
    from sparse_circuits.circuits.circuit import Circuit, TaskSample, load_circuit
    from sparse_circuits.circuits.prune import Calibration
    from sparse_circuits.circuits.values import ResampledValues
    from sparse_circuits.nodes import NodeId
    from sparse_circuits.tasks import Split

    model, means, tt = planted_setup
    pool = torch.cat(planted.pretraining_batches(2))
    for kind, values in ((Ablation.RESAMPLE, ResampledValues(pool, 1)), (Ablation.OPTIMAL, means)):
        result = prune(model, tt, values, PruneConfig(steps=200, ablation=kind))
        assert found_nodes(result) == planted.PLANTED, kind
        if kind == Ablation.OPTIMAL:  # fitted: moved from where they started
            assert any(not torch.equal(result.ablation_values[n], means[n]) for n in means)
        nodes = sorted(NodeId.at(n, i) for n, k in result.keep.items() for i in k.nonzero().squeeze(1).tolist())
        c = Circuit(task="planted", model_dir="m", model_sha256="x", config=result.config, loss=result.loss,
                    loss_calibrated=result.loss_calibrated, calibration=Calibration(), nodes=nodes, edges=[],
                    residual_links=[], qk_pairs=[], tau=result.tau, means=result.ablation_values,
                    sample=TaskSample(Split.TRAIN, 4, 0))
        c.save(tmp_path / kind.value)
        back = load_circuit(tmp_path / kind.value)
        assert back.ablation == kind and type(back.means) is type(c.means)
        assert back.intervention(model).task_loss(model, tt)[0] == pytest.approx(result.loss, abs=1e-6)


def test_complement_check_flags_a_circuit_that_needs_the_rest_ablated(planted_setup):
    """The planted circuit survives any part of the rest taking its real values. Add two neurons that
    read the same channel and write opposite amounts to the answer channel: together (the whole
    model) they cancel, mean-ablated they cancel, but either one restored alone flips the answer.
    The adversary finds one; the circuit is flagged fragile."""
    from sparse_circuits.circuits.validate import complement_check

    model, means, tt = planted_setup
    keep = planted_keep(model)
    check = complement_check(model, tt, keep, means, target_loss=0.15)
    assert not check.fragile and check.worst_loss <= 0.3 and check.adversary_size == 3

    trap = planted.planted_model()
    mlp = trap.blocks[0].mlp
    with torch.no_grad():
        for m, sign in ((5, -1.0), (6, 1.0)):
            mlp.c_fc.weight[m] = 0.0
            mlp.c_fc.weight[m, planted.C], mlp.c_fc.bias[m] = 2.0, 8.0  # a copy of the planted neuron
            mlp.c_proj.weight[planted.D, m] = 20.0 * sign
    trap_means = node_means(trap, planted.pretraining_batches(), progress=False)
    planted.center_output(trap, float(trap_means["0.mlp.post_act"][planted.N]))
    trap_means = node_means(trap, planted.pretraining_batches(), progress=False)
    whole = CircuitIntervention.keeping(None, trap_means).task_loss(trap, tt)[0]
    alone = CircuitIntervention.keeping(keep, trap_means).task_loss(trap, tt)[0]
    assert whole < 0.15 and alone < 0.15  # both the model and the circuit do the task
    check = complement_check(trap, tt, keep, trap_means, target_loss=0.15)
    assert check.fragile and check.adversary_loss > 1.0 and check.worst_loss > check.threshold == 0.3


def test_seed_agreement_and_the_backup_loop_on_a_planted_circuit_with_a_planted_backup(tmp_path):
    """Two parallel planted paths: every seed finds one of them (three nodes), the loop forbids the
    most shared node, finds the other path, forbids one of its nodes, and then no seed reaches the
    target: one backup, two rounds with circuits, a third without."""
    from sparse_circuits.circuits.backups import backup_analysis, jaccard, prune_seeds
    from sparse_circuits.nodes import NodeId

    model = planted.planted_model_with_backup()
    means = node_means(model, planted.pretraining_batches(), progress=False)
    planted.center_output(model, float(means["0.mlp.post_act"][planted.N]))
    planted.center_backup(model, float(means["0.mlp.post_act"][planted.N2]))
    means = node_means(model, planted.pretraining_batches(), progress=False)
    tt = TaskTensors(planted.planted_dataset(), 16, 0)

    @dataclasses.dataclass
    class Found:
        nodes: list
        num_nodes: int
        num_edges: int = 0

    def prune_one(seed, forbidden, out):
        r = prune(model, tt, means, PruneConfig(steps=200, seed=seed), forbidden=forbidden)
        return Found(sorted(NodeId.at(n, i) for n, k in r.keep.items() for i in k.nonzero().squeeze(1).tolist()),
                     r.num_nodes) if r.found else None

    paths = [{str(NodeId.at(site, i)) for site, idx in p.items() for i in idx} for p in (planted.PLANTED, planted.BACKUP)]
    circuits, agreement = prune_seeds(prune_one, 3, tmp_path / "seeds")
    assert all({str(n) for n in c.nodes} in paths for c in circuits.values())
    assert agreement.nodes == [3, 3, 3] and json.loads((tmp_path / "seeds" / "seeds.json").read_text())["nodes"] == [3, 3, 3]
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)

    analysis = backup_analysis(prune_one, seeds=3, out_dir=tmp_path / "backups")
    found = [r for r in analysis.rounds if r.removed is not None]
    assert len(analysis.rounds) == 3 and len(found) == 2 and analysis.backups == 1
    first_path = next(p for p in paths if found[0].removed in p)
    assert found[1].removed in (paths[1] if first_path == paths[0] else paths[0])  # then the other path
    assert analysis.rounds[2].agreement.nodes == [None, None, None] and "no seed reaches" in analysis.stopped
    assert set(analysis.core) <= first_path  # what every seed kept in the first round
    saved = json.loads((tmp_path / "backups" / "backups.json").read_text())
    assert saved["backups"] == 1 and len(saved["rounds"]) == 3


# What Neuronpedia's graph schema (apps/webapp/app/api/graph/graph-schema.json, draft-07) requires,
# re-stated here: the top-level keys, the metadata's required fields, each node's and link's.
GRAPH_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {"type": "object", "required": ["slug", "scan", "prompt_tokens", "prompt"],
                     "properties": {"slug": {"type": "string"}, "scan": {"type": "string"}, "prompt": {"type": "string"},
                                    "prompt_tokens": {"type": "array", "items": {"type": "string"}}}},
        "qParams": {"type": "object"},
        "nodes": {"type": "array", "items": {
            "type": "object", "required": ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"],
            "properties": {"node_id": {"type": "string"}, "feature": {"type": ["integer", "null"]},
                           "layer": {"type": ["string", "integer"]}, "ctx_idx": {"type": "integer"},
                           "feature_type": {"type": "string"}, "jsNodeId": {"type": "string"}, "clerp": {"type": "string"},
                           "influence": {"type": ["number", "null"]}, "activation": {"type": ["number", "null"]}}}},
        "links": {"type": "array", "items": {
            "type": "object", "required": ["source", "target", "weight"],
            "properties": {"source": {"type": "string"}, "target": {"type": "string"}, "weight": {"type": "number"}}}},
    },
}


def read_mib(d: dict) -> tuple[dict, dict, dict]:
    """MIB's circuit-track loader (circuit_loading.load_graph_from_json), re-stated: cfg, nodes and
    edges must be there; every node name is one of its graph's (input, aL.hH, mL; logits is always
    in the graph and cannot be set); every edge is parent->child or parent->aL.hH<q|k|v> with a
    score and in_graph; neurons, when given, are d_model booleans per node."""
    assert all(k in d for k in ("cfg", "nodes", "edges"))
    cfg = d["cfg"]
    names = {"input"} | {f"a{l}.h{h}" for l in range(cfg["n_layers"]) for h in range(cfg["n_heads"])} | \
        {f"m{l}" for l in range(cfg["n_layers"])}
    assert set(d["nodes"]) <= names and "logits" not in d["nodes"]
    for name, info in d["edges"].items():
        parent, child = name.split("->")
        assert parent in names and (child == "logits" or child.split("<")[0] in names)
        assert child.startswith("a") == child.endswith((">",)) and set(info) == {"score", "in_graph"}
    for name, neurons in d.get("neurons", {}).items():
        assert name in names and len(neurons) == cfg["d_model"] and all(isinstance(x, bool) for x in neurons)
    return d["nodes"], {n: e for n, e in d["edges"].items() if e["in_graph"]}, d.get("neurons", {})


def test_exports_validate_against_their_formats_and_keep_the_edges(planted_setup):
    """The planted circuit (embedding channel C -> MLP neuron N -> channel D -> logits): the graph
    export passes the schema with one link per circuit edge and residual link; the MIB export reads
    back as input -> m0 -> logits with the right channels; the faithfulness curve goes from the
    empty circuit to the whole circuit."""
    import jsonschema

    from sparse_circuits.circuits.circuit import Circuit, TaskSample
    from sparse_circuits.circuits.edges import count_edges
    from sparse_circuits.circuits.export import graph_json, mib_component_edges, mib_json
    from sparse_circuits.circuits.prune import Calibration
    from sparse_circuits.circuits.validate import faithfulness_curve
    from sparse_circuits.nodes import NodeId
    from sparse_circuits.tasks import Split

    model, means, tt = planted_setup
    result = prune(model, tt, means, PruneConfig(steps=200))
    edges = count_edges(model, result.keep)
    c = Circuit(task="planted", model_dir="m", model_sha256="x", config=result.config, loss=result.loss,
                loss_calibrated=result.loss, calibration=Calibration(),
                nodes=sorted(NodeId.at(n, i) for n, k in result.keep.items() for i in k.nonzero().squeeze(1).tolist()),
                edges=edges.weights, residual_links=edges.residual, qk_pairs=edges.qk_pairs, tau=result.tau,
                means=means, sample=TaskSample(Split.TRAIN, 4, 0))

    class Tok:
        decode = staticmethod(lambda ids: "".join(f"<{i}>" for i in ids))

    graph = graph_json(c, model, Tok(), [5, 6, planted.X], "planted")
    jsonschema.validate(graph, GRAPH_SCHEMA)
    assert len(graph["links"]) == c.num_edges + len(c.residual_links) == 2
    assert {n["node_id"] for n in graph["nodes"]} >= {link["source"] for link in graph["links"]}
    assert graph["metadata"]["prompt_tokens"] == ["<5>", "<6>", f"<{planted.X}>"]
    assert {n["clerp"] for n in graph["nodes"]} == {"residual channel 0 read by layer 0 MLP", "layer 0 MLP neuron 0",
                                                    "residual channel 1 written by layer 0 MLP"}

    nodes, in_graph, neurons = read_mib(mib_json(c, model))
    assert set(in_graph) == {"input->m0", "m0->logits"}
    assert in_graph["input->m0"]["score"] == pytest.approx(2.0)  # |c_fc weight| from channel C to neuron N
    assert nodes["m0"] and nodes["input"] and not any(v for k, v in nodes.items() if k.startswith("a"))
    assert [i for i, x in enumerate(neurons["input"]) if x] == [planted.C]
    assert [i for i, x in enumerate(neurons["m0"]) if x] == [planted.D]
    assert len(mib_json(c, model)["edges"]) == len(mib_component_edges(1, 2)) == 3 * 2 * 1 + 3 + 4

    curve = faithfulness_curve(c, model, tt)
    assert curve.points[0][:2] == [0, 0] and curve.points[-1][:2] == [3, 2]
    assert curve.points[-1][3] > 0.8 and curve.points[0][3] == 0.0 and 0 < curve.cpr < 1 and curve.cmd < 1


def test_prune_all_side_by_side_equals_one_at_a_time_and_resumes_task_by_task(tmp_path, data_dir, capfd, request):
    """`jobs=2` prunes tasks in two single-thread processes: the same circuits, summary and files as one
    at a time, a task from a file included (each process registers it again); a task a killed
    side-by-side run finished (its own summary under PARTS_DIR) is reused."""
    from conftest import tiny_config
    from sparse_circuits.circuits.api import CIRCUIT_FILES, PARTS_DIR, prune_all
    from sparse_circuits.circuits.circuit import load_circuit
    from sparse_circuits.circuits.summary import PruneAllSummary
    from sparse_circuits.errors import UserError
    from sparse_circuits.tasks.from_file import forget_task_files, use_task_files
    from sparse_circuits.train import train
    from test_task_files import rows, write_rows

    run = tmp_path / "run"
    train(tiny_config(data_dir, steps=3, threads=1), run, progress=False)
    use_task_files([write_rows(tmp_path / "comprehension.jsonl", rows())])
    request.addfinalizer(forget_task_files)
    names = ["for_while", "indent_for", "while_return_true", "comprehension"]  # in the suite's order
    cfg = PruneConfig(steps=3, target_loss=5.0, cleanup_tries=0)  # a loose target: every attempt finds a circuit
    kwargs = dict(n_pairs=8, max_full_loss=10.0, include_controls=False, progress=False, only=names)
    one = prune_all(run, tmp_path / "one", cfg, log=lambda _: None, **kwargs)
    two = tmp_path / "two"
    prune_all(run, two / PARTS_DIR / "indent_for", cfg, log=lambda _: None, **kwargs | {"only": ["indent_for"]})
    lines = []
    side = prune_all(run, two, cfg, log=lines.append, jobs=2, reuse=True, **kwargs)
    timeless = lambda s: {n: dataclasses.replace(o, seconds=None) for n, o in s.tasks.items()}  # noqa: E731
    assert timeless(side) == timeless(one) and list(side.tasks) == names  # the suite's order, whatever ended first
    assert PruneAllSummary.load(two) == side
    for name in names:
        assert all((two / name / f).is_file() for f in CIRCUIT_FILES), name
        assert load_circuit(two / name).nodes == load_circuit(tmp_path / "one" / name).nodes
    assert not (two / PARTS_DIR).exists()
    assert "pruning 4 tasks, 2 at a time, one thread each" in lines
    assert "[indent_for] indent_for: reused" in capfd.readouterr().out
    with pytest.raises(UserError, match="--jobs"):
        prune_all(run, tmp_path / "three", cfg, log=lambda _: None, jobs=0, **kwargs)
