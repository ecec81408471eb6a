"""OpenAI's release format: import, export, and parity with a plain re-statement of their forward.

`reference_logits` below is written from the facts of SPEC section 10 (not from their code): it
reads their state dict directly, so our importer, our forward and our exporter are all checked
against something that shares none of their code.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sparse_circuits.runs import load_model
from sparse_circuits.data import load_tokenizer
from sparse_circuits.errors import UserError
from sparse_circuits.interop import export_openai, import_openai, load_bpe
from sparse_circuits.model import RMSNorm

from conftest import tiny_config

EOT = "<|endoftext|>"


# -- their format, written by hand ----------------------------------------------------------------

def gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> character table: bytes 33-126, 161-172 and 174-255 are themselves, the other
    68 bytes become chr(256), chr(257), ... in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


# A few merges of Python-ish text; "Ġ" is the space byte.
MERGES = [("Ġ", "d"), ("Ġd", "e"), ("Ġde", "f"), ("s", "e"), ("l", "f"), ("se", "lf"), ("Ġ", "="),
          ("(", "\""), ("\"", ")"), ("i", "n"), ("Ġ", "in"), ("r", "e"), ("re", "t")]


def write_bpe(directory: Path) -> int:
    """encoder.json + vocab.bpe in the data-gym layout; returns the vocabulary size (EOT last)."""
    chars = gpt2_byte_chars()
    first = [b for b in range(256) if chr(b).isprintable() and b != 32]
    ranks = first + [b for b in range(256) if b not in first]
    encoder = {chars[b]: i for i, b in enumerate(ranks)}
    for a, b in MERGES:
        encoder[a + b] = len(encoder)
    encoder[EOT] = len(encoder)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "encoder.json").write_text(json.dumps(encoder))
    (directory / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    return len(encoder)


def release_config(vocab: int, **over) -> dict:
    cfg = {"n_layer": 2, "n_head": 2, "d_head": 8, "d_model": 16, "d_mlp": 32, "block_size": 24,
           "vocab_size": vocab, "bias": True, "ln_bias": False, "rms_norm": True, "activation_type": "gelu",
           "residual_activation_type": "identity", "afrac": 0.25,
           "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out", "tied_unembed": False,
           "enable_bigram_table": False, "learnable_bigram_table": False, "d_pos_emb": None, "sink": False,
           "flash": True, "dropout": 0.0, "grad_checkpointing": False, "pfrac": 0.1}
    return cfg | over


def release_state_dict(cfg: dict, wpe: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with about half of them exactly zero, in their names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.3):
        t = torch.randn(*shape, generator=g) * scale
        return t * (torch.rand(*shape, generator=g) > 0.5)

    d, v, dp = cfg["d_model"], cfg["vocab_size"], cfg["d_pos_emb"]
    d_in, qkv = d + (dp or 0), 3 * cfg["n_head"] * cfg["d_head"]
    sd = {"transformer.wte.weight": rnd(v, d, scale=1.0),
          "transformer.wpe.weight": (rnd(cfg["block_size"], dp or d, scale=1.0) if wpe == "trained"
                                     else torch.zeros(cfg["block_size"], dp or d)),
          "transformer.ln_f.weight": 1 + rnd(d, scale=0.1), "final_logits_bias": rnd(v)}
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if cfg["tied_unembed"] else rnd(v, d, scale=1.0)
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        sd |= {p + "ln_1.weight": 1 + rnd(d, scale=0.1), p + "ln_2.weight": 1 + rnd(d, scale=0.1),
               p + "attn.c_attn.weight": rnd(qkv, d_in), p + "attn.c_proj.weight": rnd(d, d),
               p + "mlp.c_fc.weight": rnd(cfg["d_mlp"], d_in), p + "mlp.c_proj.weight": rnd(d, cfg["d_mlp"]),
               p + "attn.bias": torch.ones(1, 1, cfg["block_size"], cfg["block_size"]).tril()}  # a mask buffer
        if cfg["bias"]:
            sd |= {p + "attn.c_attn.bias": rnd(qkv), p + "attn.c_proj.bias": rnd(d),
                   p + "mlp.c_fc.bias": rnd(cfg["d_mlp"]), p + "mlp.c_proj.bias": rnd(d)}
        if cfg["sink"]:
            sd[p + "attn.attn_imp.sink_logit"] = torch.randn(cfg["n_head"], generator=g)
        if dp is not None:
            sd[p + "ln_p1.weight"] = 1 + rnd(dp, scale=0.1)
            sd[p + "ln_p2.weight"] = 1 + rnd(dp, scale=0.1)
    if cfg["enable_bigram_table"]:
        sd["bigram_table"] = torch.randn(v, v, generator=g)
    return sd


def write_release(directory: Path, cfg: dict, sd: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "beeg_config.json").write_text(json.dumps(cfg))
    torch.save(sd, directory / "final_model.pt")
    return directory


# -- their forward, re-stated ---------------------------------------------------------------------

def reference_logits(cfg: dict, sd: dict, idx: torch.Tensor) -> torch.Tensor:
    B, T = idx.shape
    H, dh = cfg["n_head"], cfg["d_head"]
    concat = cfg.get("d_pos_emb") is not None

    def rms(x, w):  # nn.RMSNorm's default epsilon: the dtype's machine epsilon
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * w

    def abstopk(x, loc):  # exactly int(afrac * width) entries per token, over the whole width
        if cfg.get("afrac") is None or loc not in cfg["afrac_loctypes"].split(","):
            return x
        keep = x.abs().topk(int(cfg["afrac"] * x.shape[-1]), dim=-1).indices
        return torch.zeros_like(x).scatter(-1, keep, x.gather(-1, keep))

    def linear(x, name):
        return x @ sd[name + ".weight"].T + (sd[name + ".bias"] if cfg["bias"] else 0)

    x = sd["transformer.wte.weight"][idx]
    pos = sd["transformer.wpe.weight"][:T]
    if not concat:
        x = x + pos  # always added, zeros or not
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        h = rms(x, sd[p + "ln_1.weight"])
        if concat:
            h = torch.cat([h, rms(pos, sd[p + "ln_p1.weight"]).expand(B, T, -1)], dim=-1)
        h = abstopk(h, "attn_in")
        q, k, v = linear(h, p + "attn.c_attn").split(H * dh, dim=-1)
        q, k, v = abstopk(q, "attn_q"), abstopk(k, "attn_k"), abstopk(v, "attn_v")
        q, k, v = (t.view(B, T, H, dh).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        if cfg["sink"]:  # one more always-visible slot with value 0 and logit sink_logit[h]
            sink = sd[p + "attn.attn_imp.sink_logit"].view(1, H, 1, 1).expand(B, H, T, 1)
            probs = torch.cat([sink, scores], dim=-1).softmax(-1)[..., 1:]
        else:
            probs = scores.softmax(-1)
        y = (probs @ v).transpose(1, 2).reshape(B, T, H * dh)
        x = x + abstopk(linear(y, p + "attn.c_proj"), "attn_out")
        h = rms(x, sd[p + "ln_2.weight"])
        if concat:
            h = torch.cat([h, rms(pos, sd[p + "ln_p2.weight"]).expand(B, T, -1)], dim=-1)
        h = abstopk(h, "mlp_in")
        h = abstopk(F.gelu(linear(h, p + "mlp.c_fc")), "mlp_neuron")
        x = x + abstopk(linear(h, p + "mlp.c_proj"), "mlp_out")
    logits = rms(x, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T + sd.get("final_logits_bias", 0)
    if cfg["enable_bigram_table"]:
        logits = logits + sd["bigram_table"][idx]
    return logits


CASES = {
    "plain": ({}, "zeros"),
    "everything_on": ({"sink": True, "enable_bigram_table": True, "tied_unembed": True,
                       "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"},
                      "trained"),
    "no_bias_learnable_bigram": ({"bias": False, "enable_bigram_table": True, "learnable_bigram_table": True,
                                  "sink": True}, "zeros"),
    "dense_activations": ({"afrac": None, "n_mlp": 48, "d_mlp": None}, "trained"),
    "concatenated_positions": ({"d_pos_emb": 4, "sink": True}, "trained"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_imported_model_matches_their_forward(tmp_path, case):
    over, wpe = CASES[case]
    vocab = write_bpe(tmp_path / "tok")
    cfg = release_config(vocab, **over)
    if cfg.get("d_mlp") is None:
        cfg.pop("d_mlp")
    sd = release_state_dict(cfg | {"d_mlp": cfg.get("d_mlp", cfg.get("n_mlp"))}, wpe)
    src = write_release(tmp_path / "release", cfg, sd)
    run_cfg = import_openai(src, tmp_path / "run", tokenizer_dir=tmp_path / "tok", log=lambda *_: None)
    model, _ = load_model(tmp_path / "run")
    idx = torch.randint(0, vocab, (3, 20), generator=torch.Generator().manual_seed(1))
    ref_cfg = cfg | {"d_mlp": cfg.get("d_mlp", cfg.get("n_mlp"))}
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(ref_cfg, sd, idx), atol=1e-4, rtol=1e-4)
    record = json.loads((tmp_path / "run" / "import.json").read_text())
    assert "pfrac" in record["keys_without_effect"]  # recognised and reported, not silently dropped
    assert record["dropped_tensors"] == ["transformer.h.0.attn.bias", "transformer.h.1.attn.bias"]
    assert run_cfg.model.positions.value == ("concat" if case == "concatenated_positions" else
                                             "learned" if wpe == "trained" else "none")


def test_concatenated_positions_pass_through_the_input_sites(tmp_path):
    """Their AbsTopK selects over [x, positions]: the imported model's input sites are that wide,
    the position channels are nodes, and edges are counted over them."""
    from sparse_circuits.circuits.edges import count_edges

    vocab = write_bpe(tmp_path / "tok")
    cfg = release_config(vocab, d_pos_emb=4)
    import_openai(write_release(tmp_path / "r", cfg, release_state_dict(cfg, "trained")), tmp_path / "run",
                  tokenizer_dir=tmp_path / "tok", log=lambda *_: None)
    model, _ = load_model(tmp_path / "run")
    assert model.node_sites()["0.attn.act_in"].width == 20 and model.node_sites()["0.mlp.act_in"].width == 20
    keep = {name: torch.ones(site.width, dtype=torch.bool) for name, site in model.node_sites().items()}
    edges = count_edges(model, keep)
    assert any(e.src.index >= 16 for e in edges.weights)  # a position channel feeds q/k/v or the MLP
    assert all(e.dst.index < 16 for e in edges.residual)  # nothing writes the position channels


def test_a_truncated_or_empty_vocab_bpe_is_refused(tmp_path):
    """Loaded anyway, a truncated merges file gives a tokenizer that spends far more tokens on the
    same text; every token but the bytes must be made by a merge."""
    write_bpe(tmp_path / "tok")
    assert load_bpe(tmp_path / "tok").get_vocab_size() > 257
    lines = (tmp_path / "tok" / "vocab.bpe").read_text().splitlines(keepends=True)
    for kept in (lines[:1], lines[: len(lines) // 2]):
        (tmp_path / "tok" / "vocab.bpe").write_text("".join(kept))
        with pytest.raises(UserError, match="made by no merge"):
            load_bpe(tmp_path / "tok")


def test_tokenizer_files_encode_as_tiktoken_does(tmp_path, data_dir):
    tiktoken_load = pytest.importorskip("tiktoken.load")
    import tiktoken

    from sparse_circuits.data.prepare import PRETOKENIZE_REGEX
    from sparse_circuits.interop import export_bpe

    text = (Path(__file__).read_text(encoding="utf-8")[:4000] + '\nprint("hi")\n\tx = [[1, 2]]\n'
            + "def f(self):\n    return self.x  # é ü 😀\n")
    ours = load_tokenizer(Path(data_dir) / "tokenizer.json")
    for name, directory in (("hand-written", tmp_path / "hand"), ("exported", tmp_path / "exported")):
        if name == "hand-written":
            n = write_bpe(directory)
        else:
            order = export_bpe(ours, directory)
            n = len(order)
        ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(str(directory / "vocab.bpe"),
                                                               str(directory / "encoder.json"))
        enc = tiktoken.Encoding(name, pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={EOT: n - 1})
        tok = load_bpe(directory)
        assert tok.get_vocab_size() == n and tok.token_to_id(EOT) == n - 1
        assert tok.encode(text, add_special_tokens=False).ids == enc.encode(text, allowed_special="all"), name
        if name == "exported":  # the same tokens as our tokenizer, renumbered
            assert [order[i] for i in enc.encode(text, allowed_special="all")] == ours.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    from sparse_circuits.train import train

    out = tmp_path_factory.mktemp("interop") / "run"
    cfg = tiny_config(data_dir)
    cfg.model.attention_sink = True
    train(cfg, out, progress=False)
    return out


def test_export_then_import_gives_identical_logits(tmp_path, tiny_run):
    model, cfg = load_model(tiny_run, sparse_threshold=0.0)
    result = export_openai(tiny_run, tmp_path / "exp", log=lambda *_: None)
    exp = tmp_path / "exp"
    assert {p.name for p in exp.iterdir()} >= {"beeg_config.json", "final_model.pt", "encoder.json", "vocab.bpe"}
    config = json.loads((exp / "beeg_config.json").read_text())
    sd = torch.load(exp / "final_model.pt", weights_only=True)
    # Their forward on the exported files equals ours (with their RMSNorm epsilon), token ids renumbered.
    text = "def f(items):\n    for x in items:\n        print(\"x\")\n"
    ours_ids = load_tokenizer(tiny_run / "tokenizer.json").encode(text, add_special_tokens=False).ids
    theirs_ids = load_bpe(exp).encode(text, add_special_tokens=False).ids
    new_of_old = {}
    enc = json.loads((exp / "encoder.json").read_text())
    old_vocab = load_tokenizer(tiny_run / "tokenizer.json").get_vocab()
    for token, new in enc.items():
        new_of_old[old_vocab[token]] = new
    assert [new_of_old[i] for i in ours_ids] == theirs_ids
    perm = torch.tensor([old for old, _ in sorted(new_of_old.items(), key=lambda kv: kv[1])])
    idx_old, idx_new = torch.tensor([ours_ids]), torch.tensor([theirs_ids])
    with torch.no_grad():
        ours = model(idx_old)
        for m in model.modules():
            if isinstance(m, RMSNorm):
                m.eps = None
        ours_machine_eps = model(idx_old)
    torch.testing.assert_close(reference_logits(config, sd, idx_new), ours_machine_eps[..., perm], atol=1e-4, rtol=1e-4)
    assert result["max_logit_change_from_norm_eps"] is not None
    # Importing the export back is exact (the sidecar restores the epsilon).
    import_openai(exp, tmp_path / "back", log=lambda *_: None)
    back, back_cfg = load_model(tmp_path / "back", sparse_threshold=0.0)
    assert back_cfg.model.norm_eps == cfg.model.norm_eps
    with torch.no_grad():
        assert torch.equal(back(idx_new), ours[..., perm])


def test_export_refuses_what_their_forward_cannot_compute(tmp_path, data_dir):
    from sparse_circuits.interop.openai import release_config as to_release

    cfg = tiny_config(data_dir, steps=1)
    cfg.model.positions = type(cfg.model.positions)("concat")
    with pytest.raises(UserError, match="positions_at_input_site"):
        to_release(cfg.model)
    cfg.model.positions_at_input_site = True
    assert to_release(cfg.model)["d_pos_emb"] == cfg.model.d_pos
    cfg.model.activation_topk = {k: (0.5 if i else 0.25) for i, k in enumerate(cfg.model.activation_topk)}
    with pytest.raises(UserError, match="one afrac"):
        to_release(cfg.model)


def _broken(tmp_path, change_cfg=None, change_sd=None, name="r"):
    vocab = write_bpe(tmp_path / "tok")
    cfg = release_config(vocab)
    sd = release_state_dict(cfg, "zeros")
    if change_cfg:
        change_cfg(cfg)
    if change_sd:
        change_sd(sd)
    return write_release(tmp_path / name, cfg, sd)


@pytest.mark.parametrize("change_cfg, change_sd, message", [
    (lambda c: c.update(n_layers=2), None, "unknown config key 'n_layers'"),
    (lambda c: c.update(rms_norm=False), None, "LayerNorm"),
    (lambda c: c.update(afrac_loctypes="attn_in,resid_post_mlp"), None, "resid_post_mlp"),
    (lambda c: c.update(activation_type="relu"), None, "GELU"),
    (lambda c: c.update(use_tied_aux_matrix=True), None, "use_tied_aux_matrix"),
    (lambda c: c.update(n_layer="2"), None, "n_layer must be"),
    (None, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight"), "'transformer.h.1.mlp.c_fc.weight' is missing"),
    (None, lambda s: s.update(extra=torch.zeros(1)), "unexpected tensor 'extra'"),
    (None, lambda s: s.update({"transformer.ln_f.weight": torch.ones(3)}), "transformer.ln_f.weight has shape"),
    (None, lambda s: s["transformer.h.0.mlp.c_fc.weight"].__setitem__((0, 0), float("nan")), "not finite"),
    (lambda c: c.update(vocab_size=c["vocab_size"] + 1), None, "vocab_size"),
    (lambda c: c.update(n_layer=1_000_000_000), None, "n_layer 1000000000 is outside"),
    (lambda c: (c.update(n_head=0), c.pop("d_head", None)), None, "n_head must be >= 1"),
])
def test_strict_import_names_the_problem(tmp_path, change_cfg, change_sd, message):
    src = _broken(tmp_path, change_cfg, change_sd)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        import_openai(src, tmp_path / "run", tokenizer_dir=tmp_path / "tok", log=lambda *_: None)
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_damaged_export_record_or_run_config_is_refused_before_building(tmp_path, tiny_run):
    """sparse_circuits.json with a model that is not an object or a norm_eps that is not a number; a
    run's config.json edited to n_layer 1e9: one-line errors before any model is built."""
    exp = tmp_path / "exp"
    export_openai(tiny_run, exp, log=lambda *_: None)
    record = json.loads((exp / "sparse_circuits.json").read_text())
    for bad in ({"model": []}, {"model": record["model"] | {"norm_eps": "abc"}}):
        (exp / "sparse_circuits.json").write_text(json.dumps(record | bad))
        with pytest.raises(UserError, match="sparse_circuits.json: damaged"):
            import_openai(exp, tmp_path / "run", log=lambda *_: None)
        assert not (tmp_path / "run").exists()
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["n_layer"] = 1_000_000_000
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="n_layer 1000000000 is beyond"):
        load_model(run)


def test_an_export_that_fails_leaves_the_earlier_one_or_nothing(tmp_path, tiny_run, monkeypatch):
    """A full disk while writing final_model.pt: no half-written export, no staging directory left."""
    import errno

    def full_disk(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    exp = tmp_path / "exp"
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        with pytest.raises(OSError):
            export_openai(tiny_run, exp, log=lambda *_: None)
    assert not exp.exists() and list(tmp_path.iterdir()) == []
    export_openai(tiny_run, exp, log=lambda *_: None)
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        with pytest.raises(OSError):
            export_openai(tiny_run, exp, log=lambda *_: None, overwrite=True)
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]
    assert oct(exp.stat().st_mode & 0o777) != oct(0o700)
    # A target holding a directory named like the weights: refused unless overwrite, then replaced whole.
    odd = tmp_path / "odd"
    (odd / "final_model.pt").mkdir(parents=True)
    with pytest.raises(UserError, match="already holds files; pass --force"):
        export_openai(tiny_run, odd, log=lambda *_: None)
    export_openai(tiny_run, odd, log=lambda *_: None, overwrite=True)
    written = torch.load(odd / "final_model.pt", weights_only=True)
    assert written.keys() == torch.load(exp / "final_model.pt", weights_only=True).keys()


class NotAWeight:  # pickled by reference: weights-only loading must refuse it
    pass


def test_pickled_code_is_refused_and_the_cli_says_so_in_one_line(tmp_path):
    src = _broken(tmp_path)
    torch.save({"transformer.wte.weight": torch.zeros(1), "evil": NotAWeight()}, src / "final_model.pt")
    r = subprocess.run([sys.executable, "-m", "sparse_circuits.cli", "import-openai", str(src), "--out",
                        str(tmp_path / "run"), "--tokenizer", str(tmp_path / "tok")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "never unpickles code" in lines[0], r.stderr
    assert "weights_only" not in lines[0] and "state_dict" in lines[0]  # what to do, in this tool's terms
    assert not (tmp_path / "run").exists()
    # An empty or truncated checkpoint: one line too (the message itself must not fail).
    for content in (b"", b"PK\x03\x04"):
        (src / "final_model.pt").write_bytes(content)
        r = subprocess.run([sys.executable, "-m", "sparse_circuits.cli", "import-openai", str(src), "--out",
                            str(tmp_path / "run"), "--tokenizer", str(tmp_path / "tok")],
                           capture_output=True, text=True, timeout=300)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "not a readable PyTorch checkpoint" in lines[0], r.stderr
    # A directory where the weights file should be: named as such, not "no final_model.pt".
    (src / "final_model.pt").unlink()
    (src / "final_model.pt").mkdir()
    with pytest.raises(UserError, match="final_model.pt: not a regular file"):
        import_openai(src, tmp_path / "run", tokenizer_dir=tmp_path / "tok")


def test_hub_prefix_is_removed(tmp_path):
    vocab = write_bpe(tmp_path / "tok")
    cfg = release_config(vocab)
    sd = release_state_dict(cfg, "zeros")
    write_release(tmp_path / "r", cfg, {"circuit_model." + k: v for k, v in sd.items()})
    import_openai(tmp_path / "r", tmp_path / "run", tokenizer_dir=tmp_path / "tok", log=lambda *_: None)
    model, _ = load_model(tmp_path / "run")
    idx = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(cfg, sd, idx), atol=1e-4, rtol=1e-4)


def test_every_command_runs_on_an_imported_model(tmp_path, tiny_run, corpus_dir):
    """import-openai, then data with its tokenizer, tasks eval, prune, validate and report."""
    from test_cli import cli

    export_openai(tiny_run, tmp_path / "exp", log=lambda *_: None)
    (tmp_path / "exp" / "sparse_circuits.json").unlink()  # as a release directory would be
    run = tmp_path / "imported"
    r = cli("import-openai", tmp_path / "exp", "--out", run)
    assert r.returncode == 0, r.stderr
    data = tmp_path / "data"
    r = cli("data", "--corpus", corpus_dir, "--out", data, "--tokenizer", run / "tokenizer.json", "--no-contamination")
    assert r.returncode == 0, r.stderr
    assert json.loads((data / "meta.json").read_text())["vocab_size"] == json.loads(
        (run / "config.json").read_text())["model"]["vocab_size"]
    # Again, now with its data: an import onto a run is refused unless --force, which replaces it whole.
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # as if the directory held a trained run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = cli("import-openai", tmp_path / "exp", "--out", run, "--data", data)
    assert r.returncode == 2 and "pass --force" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    r = cli("import-openai", tmp_path / "exp", "--out", run, "--data", data, "--force")
    assert r.returncode == 0, r.stderr
    assert not (run / "metrics.jsonl").exists()  # nothing of the old run stays beside the new weights
    # An export onto an earlier export: the same rule.
    r = cli("export-openai", run, "--out", tmp_path / "exp")
    assert r.returncode == 2 and "pass --force" in r.stderr, r.stderr
    assert cli("export-openai", run, "--out", tmp_path / "exp", "--force").returncode == 0
    assert json.loads((run / "config.json").read_text())["model"]["norm_eps"] is None
    r = cli("tasks", "eval", "--model", run, "--pairs", 4, "--task", "for_while", "--json", tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    circuit = tmp_path / "circuit"
    r = cli("prune", "--model", run, "--task", "for_while", "--out", circuit, "--target-loss", 2.0,
            "--steps", 5, "--budget", 2, "--pairs", 8)
    assert r.returncode == 0, r.stderr
    r = cli("validate", circuit, "--pairs", 8, "--random", 2)
    assert r.returncode == 0, r.stderr
    r = cli("report", "--model", run, circuit, "--out", tmp_path / "site", "--windows", 8)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    # A data directory made with another tokenizer is refused.
    r = cli("import-openai", tmp_path / "exp", "--out", tmp_path / "x", "--data", tiny_run.parent.parent / "data0")
    assert r.returncode == 2
