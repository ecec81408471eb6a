"""OpenAI's released weight-sparse models (github.com/openai/circuit_sparsity) to and from our
run directories.

Their model directory: `beeg_config.json` (their GPTConfig's keyword arguments) and
`final_model.pt` (a plain state dict, nanoGPT names, dense tensors with exact zeros; loaded here
with weights-only unpickling, never full unpickling); their tokenizer: `encoder.json` +
`vocab.bpe` (interop/bpe.py). SPEC section 10 lists the facts their forward depends on; each is
a typed option of our ModelConfig, so the imported model runs through our one forward pass:

  theirs                                   ours
  RMSNorm, epsilon = the dtype's eps       model.norm_eps = null
  afrac + afrac_loctypes                   model.activation_topk {location: afrac}
  fused c_attn (q, k, v)                   attn.c_q, attn.c_k, attn.c_v
  wpe.weight[:T] always added              positions 'learned' (or 'none' when wpe is all zero)
  d_pos_emb: [x, ln_p(wpe)] into AbsTopK   positions 'concat', positions_at_input_site
  lm_head (no bias) + final_logits_bias    lm_head.weight, lm_head.bias
  bigram_table[idx] added to the logits    bigram table 'fixed' / 'learnable'
  attn.attn_imp.sink_logit                 attn.sink_logit
Biases a config turns off (`bias: false`) become zeros; a tied unembedding becomes two equal
tensors. Options our forward does not have (LayerNorm, ReLU, a ReLU on the residual stream,
AbsTopK on the residual stream) are refused with a one-line error, never approximated.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import save_state_dict
from ..config import MODEL_BOUNDS, BigramTable, ModelConfig, Positions, RunConfig, SparsityConfig, to_dict
from ..data import check_same_tokenizer, load_tokenizer
from ..errors import UserError
from ..fileio import atomic_path, fsync_path, read_json, sha256_file, write_json
from ..runs import Run
from ..model import GPT, RMSNorm
from ..nodes import NodeLocation
from .bpe import ENCODER_FILE, MERGES_FILE, export_bpe, load_bpe

CONFIG_FILE = "beeg_config.json"
WEIGHTS_FILE = "final_model.pt"
IMPORT_RECORD = "import.json"  # in our run directory: where the model came from, what was dropped
EXPORT_SIDECAR = "sparse_circuits.json"  # in an exported directory: our config, for an exact round trip
HUB_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # the Hugging Face copy's names for its weights
HUB_PREFIX = "circuit_model."  # weights of the Hugging Face copy (openai/circuit-sparsity) sit under it

# Their names of the node locations (afrac_loctypes).
LOCTYPES = {
    "attn_in": NodeLocation.ATTN_IN, "attn_q": NodeLocation.ATTN_Q, "attn_k": NodeLocation.ATTN_K,
    "attn_v": NodeLocation.ATTN_V, "attn_out": NodeLocation.ATTN_OUT, "mlp_in": NodeLocation.MLP_IN,
    "mlp_neuron": NodeLocation.MLP_NEURON, "mlp_out": NodeLocation.MLP_OUT,
}
# Config keys that do not change the forward pass of a trained model: recognised, reported in
# import.json, not used.
NO_EFFECT_KEYS = {
    "pfrac": "training: the weight nonzero fraction (measured from the tensors instead)",
    "use_tied_aux_matrix": "training: must be false in a released model",
    "bigram_table_rank": "training: the table is stored whole",
    "enable_sparse_kernels": "training speed",
    "dropout": "training only",
    "dropout_cat_pos_emb": "training only",
    "sinusoidal_cat_pos_emb": "initialisation only (the table is stored)",
    "grad_checkpointing": "training memory",
    "debug_nans": "debugging",
    "flash": "kernel choice (their sink needs flash=True; ours has one attention path)",
    "tokenizer_name": "names the tokenizer; pass its files with --tokenizer",
    "ln_bias": "LayerNorm only; RMSNorm has no bias",
}


@dataclass
class ReleaseConfig:
    """Their GPTConfig fields that shape the forward pass, with their defaults (a key missing
    from beeg_config.json means their default, as in their loader)."""

    n_layer: int = 12
    n_head: int = 12
    d_head: int | None = None
    d_model: int = 768
    d_mlp: int | None = None
    block_size: int = 1024
    vocab_size: int = 50304
    bias: bool = True
    rms_norm: bool = False
    activation_type: str = "gelu"
    residual_activation_type: str = "identity"
    afrac: float | None = None
    afrac_loctypes: str = "attn_in,attn_out,mlp_in,mlp_out"
    tied_unembed: bool = True
    enable_bigram_table: bool = False
    learnable_bigram_table: bool = False
    d_pos_emb: int | None = None
    sink: bool = False

    @classmethod
    def parse(cls, data: dict, where: str) -> tuple["ReleaseConfig", dict]:
        """The config and the recognised keys without effect on the forward pass."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object of GPTConfig fields")
        data = dict(data)
        if "n_mlp" in data:  # an older spelling
            if "d_mlp" in data:
                raise UserError(f"{where}: gives both n_mlp and d_mlp; keep one")
            data["d_mlp"] = data.pop("n_mlp")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields) - set(NO_EFFECT_KEYS))
        if unknown:
            raise UserError(f"{where}: unknown config key {unknown[0]!r} (known: {', '.join(sorted(fields))}, "
                            f"and without effect on the forward: {', '.join(sorted(NO_EFFECT_KEYS))})")
        ignored = {k: data.pop(k) for k in list(data) if k in NO_EFFECT_KEYS}
        if ignored.get("use_tied_aux_matrix"):
            raise UserError(f"{where}: use_tied_aux_matrix is true (a training-time factorisation); "
                            "a released model has it baked in and false")
        kinds = {"int": int, "float": float, "bool": bool, "str": str}
        for k, v in data.items():
            want = str(fields[k].type).split(" | ")[0]
            ok = v is None and "None" in str(fields[k].type) or (
                isinstance(v, kinds[want]) and not (want != "bool" and isinstance(v, bool))) or (
                want == "float" and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise UserError(f"{where}: {k} must be {fields[k].type}, got {v!r}")
        cfg = cls(**data)
        if cfg.n_head < 1:
            raise UserError(f"{where}: n_head must be >= 1, got {cfg.n_head}")
        cfg.d_mlp = cfg.d_mlp if cfg.d_mlp is not None else 4 * cfg.d_model
        cfg.d_head = cfg.d_head if cfg.d_head is not None else cfg.d_model // cfg.n_head
        return cfg, ignored

    def check_supported(self, where: str) -> None:
        """Refuse what our forward does not compute, naming the option."""
        for name, bound in (("n_layer", MODEL_BOUNDS["n_layer"]), ("d_model", MODEL_BOUNDS["d_model"]),
                            ("d_mlp", MODEL_BOUNDS["d_mlp"]), ("block_size", MODEL_BOUNDS["context"]),
                            ("n_head", MODEL_BOUNDS["d_model"]), ("vocab_size", 65535)):
            value = getattr(self, name)
            if isinstance(value, int) and not 1 <= value <= bound:
                raise UserError(f"{where}: {name} {value} is outside 1..{bound}; the config is damaged or not a "
                                "model this tool can open")
        if not self.rms_norm:
            raise UserError(f"{where}: rms_norm is false (LayerNorm); our model has RMSNorm only")
        if self.activation_type != "gelu":
            raise UserError(f"{where}: activation_type {self.activation_type!r}; our MLP uses exact GELU only")
        if self.residual_activation_type != "identity":
            raise UserError(f"{where}: residual_activation_type {self.residual_activation_type!r}; "
                            "our residual stream has no activation")
        if self.n_head * self.d_head != self.d_model:
            raise UserError(f"{where}: n_head x d_head = {self.n_head * self.d_head} differs from d_model "
                            f"{self.d_model}; our attention needs them equal")
        if self.afrac is not None:
            unknown = [t for t in self.loctypes() if t not in LOCTYPES]
            if unknown:
                raise UserError(f"{where}: afrac_loctypes has {unknown[0]!r}; ours sparsifies only "
                                f"{', '.join(LOCTYPES)} (not the residual stream)")
            if not 0 < self.afrac <= 1:
                raise UserError(f"{where}: afrac must be in (0, 1], got {self.afrac}")

    def loctypes(self) -> list[str]:
        return [t for t in self.afrac_loctypes.split(",") if t]

    def model_config(self, wpe_nonzero: bool, norm_eps: float | None) -> ModelConfig:
        concat = self.d_pos_emb is not None
        positions = Positions.CONCAT if concat else (Positions.LEARNED if wpe_nonzero else Positions.NONE)
        bigram = (BigramTable.NONE if not self.enable_bigram_table else
                  BigramTable.LEARNABLE if self.learnable_bigram_table else BigramTable.FIXED)
        topk = {LOCTYPES[t]: self.afrac for t in self.loctypes()} if self.afrac is not None else {}
        cfg = ModelConfig(n_layer=self.n_layer, d_model=self.d_model, d_head=self.d_head, d_mlp=self.d_mlp,
                          context=self.block_size, vocab_size=self.vocab_size, attention_sink=self.sink,
                          bigram_table=bigram, positions=positions, d_pos=self.d_pos_emb if concat else 16,
                          activation_topk=topk, norm_eps=norm_eps, positions_at_input_site=concat)
        cfg.validate()
        return cfg

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor their state dict holds for this config, with its shape."""
        d, d_in, qkv = self.d_model, self.d_model + (self.d_pos_emb or 0), 3 * self.n_head * self.d_head
        out = {"transformer.wte.weight": (self.vocab_size, d),
               "transformer.wpe.weight": (self.block_size, self.d_pos_emb or d),
               "transformer.ln_f.weight": (d,), "lm_head.weight": (self.vocab_size, d)}
        for i in range(self.n_layer):
            p = f"transformer.h.{i}."
            out |= {p + "ln_1.weight": (d,), p + "ln_2.weight": (d,),
                    p + "attn.c_attn.weight": (qkv, d_in), p + "attn.c_proj.weight": (d, self.n_head * self.d_head),
                    p + "mlp.c_fc.weight": (self.d_mlp, d_in), p + "mlp.c_proj.weight": (d, self.d_mlp)}
            if self.bias:
                out |= {p + "attn.c_attn.bias": (qkv,), p + "attn.c_proj.bias": (d,),
                        p + "mlp.c_fc.bias": (self.d_mlp,), p + "mlp.c_proj.bias": (d,)}
            if self.sink:
                out[p + "attn.attn_imp.sink_logit"] = (self.n_head,)
            if self.d_pos_emb is not None:
                out |= {p + "ln_p1.weight": (self.d_pos_emb,), p + "ln_p2.weight": (self.d_pos_emb,)}
        if self.enable_bigram_table:
            out["bigram_table"] = (self.vocab_size, self.vocab_size)
        return out


OPTIONAL_TENSORS = {"final_logits_bias"}  # their loader fills it with zeros when absent


def _is_mask_buffer(name: str) -> bool:
    """Causal-mask buffers (`transformer.h.{i}.attn.bias`, 4-D) are not weights."""
    return name.startswith("transformer.h.") and name.endswith(".attn.bias")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_release_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `final_model.pt` (weights-only unpickling, memory-mapped when the file
    allows) or a safetensors file; the hub copy's `circuit_model.` prefix is removed."""
    if not path.is_file():
        raise UserError(f"{path}: not found")
    if path.suffix == ".safetensors":
        from ..fileio import read_safetensors
        sd = read_safetensors(path, "weights")
    else:
        try:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:  # a legacy (non-zip) file cannot be memory-mapped
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            raise UserError(f"{path}: holds pickled objects besides tensors{what}, and this tool never unpickles code; "
                            "save the weights as a plain state dict (torch.save(model.state_dict(), ...)) or as "
                            "safetensors and import that") from None
        except (RuntimeError, EOFError, OSError, ValueError, IndexError) as e:
            raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict) and not any(
            isinstance(v, torch.Tensor) for v in sd.values()):
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise UserError(f"{path}: expected a state dict (names -> tensors)")
    if sd and all(k.startswith(HUB_PREFIX) for k in sd):
        sd = {k[len(HUB_PREFIX):]: v for k, v in sd.items()}
    return sd


def _find_weights(src: Path) -> Path:
    for name in (WEIGHTS_FILE, HUB_WEIGHTS_FILES[0], HUB_WEIGHTS_FILES[1]):
        if (src / name).is_file():
            return src / name
        if (src / name).exists():
            raise UserError(f"{src / name}: not a regular file; the weights must be a file")
    raise UserError(f"{src}: no {WEIGHTS_FILE} (or {' / '.join(HUB_WEIGHTS_FILES)}) in it")


def _find_tokenizer(src: Path, tokenizer_dir: str | os.PathLike | None):
    if tokenizer_dir is not None:
        t = Path(tokenizer_dir)
        if t.is_file():  # a tokenizers JSON
            return load_tokenizer(t), str(t)
        return load_bpe(t), str(t)
    if (src / ENCODER_FILE).is_file() or (src / MERGES_FILE).is_file():
        return load_bpe(src), str(src)
    raise UserError(f"{src}: no tokenizer; pass --tokenizer DIR with {ENCODER_FILE} and {MERGES_FILE} "
                    "(tinypython_2k for the released models)")


def import_openai(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  tokenizer_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                  log=print, overwrite: bool = False) -> RunConfig:
    """Convert a released model directory into one of our run directories (config.json,
    model.safetensors, tokenizer.json, import.json). Everything is checked before anything is written."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a directory")
    if out.resolve() == src.resolve():
        raise UserError(f"{out}: write the run directory somewhere else than the model directory it reads")
    _check_target(out, overwrite, "a run directory (its weights, metrics and checkpoints)")
    config_path = src / CONFIG_FILE
    if not config_path.is_file():
        config_path = src / "config.json"  # the hub copy
        if not config_path.is_file():
            raise UserError(f"{src}: no {CONFIG_FILE} in it; is this a released model directory?")
    raw = read_json(config_path, "model config")
    if config_path.name == "config.json" and isinstance(raw, dict):
        # Hugging Face bookkeeping around the same GPTConfig fields.
        raw = {k: v for k, v in raw.items() if k not in {"architectures", "auto_map", "model_type", "torch_dtype",
                                                         "transformers_version", "_name_or_path"}}
    rel, ignored = ReleaseConfig.parse(raw, str(config_path))
    rel.check_supported(str(config_path))
    tok, tok_source = _find_tokenizer(src, tokenizer_dir)
    if tok.get_vocab_size() != rel.vocab_size:
        raise UserError(f"tokenizer {tok_source} has {tok.get_vocab_size()} tokens but the model's vocab_size is "
                        f"{rel.vocab_size}; pass the model's own tokenizer")
    if data_dir is not None:
        check_same_tokenizer(data_dir, tok, "the imported model")
    # Our own exports say what the format cannot: the RMSNorm epsilon, and whether concatenated
    # positions joined before or after the input sites (the same forward when those are not sparsified).
    sidecar = read_json(src / EXPORT_SIDECAR, "export record") if (src / EXPORT_SIDECAR).is_file() else {}
    ours_cfg = sidecar.get("model", {}) if isinstance(sidecar, dict) else {}
    norm_eps = ours_cfg.get("norm_eps") if isinstance(ours_cfg, dict) else None
    if not isinstance(ours_cfg, dict) or not (norm_eps is None or (isinstance(norm_eps, (int, float))
                                                                   and not isinstance(norm_eps, bool))):
        raise UserError(f"{src / EXPORT_SIDECAR}: damaged (model must be an object, norm_eps a number or null); "
                        "delete the file to import with the release's defaults")

    weights_path = _find_weights(src)
    log(f"import-openai: reading {weights_path}")
    sd, dropped = _checked_release_weights(weights_path, rel, config_path.name)
    wpe_nonzero = rel.d_pos_emb is None and bool(sd["transformer.wpe.weight"].count_nonzero())
    cfg = rel.model_config(wpe_nonzero, norm_eps)
    if rel.d_pos_emb is not None and ours_cfg.get("positions_at_input_site") is False:
        cfg.positions_at_input_site = False
    has_final_bias = "final_logits_bias" in sd
    ours = _to_ours(sd, rel, cfg)
    names = _our_shapes(cfg)
    if set(ours) != set(names) or any(tuple(ours[k].shape) != names[k] for k in names):
        raise RuntimeError("import-openai: converted tensors do not match our model (a bug; please report it)")
    with torch.device("meta"):  # the blocks' linear weights, as the model names them (no allocation)
        sparsified = [k for k in GPT(cfg).sparsified_parameters() if k.startswith("blocks.") and k.endswith(".weight")]
    nonzero = sum(int(ours[k].count_nonzero()) for k in sparsified) / max(1, sum(ours[k].numel() for k in sparsified))

    run_cfg = RunConfig(model=cfg, sparsity=SparsityConfig(nonzero_frac=max(nonzero, 1e-9)),
                        data_dir=str(data_dir) if data_dir is not None else "")
    run_cfg.validate()
    if overwrite and out.is_dir():  # --force: nothing of an earlier run stays beside the new weights
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out)
    save_state_dict(run.weights_path, ours, cfg, step=0)
    del ours
    with atomic_path(run.tokenizer_path) as tmp:
        tok.save(str(tmp))
    run.write_config(run_cfg)
    record = {"source": str(src.resolve()), "config_file": config_path.name, "weights_file": weights_path.name,
              "weights_sha256": sha256_file(weights_path), "tokenizer": tok_source,
              "release_config": dataclasses.asdict(rel), "keys_without_effect": ignored,
              "dropped_tensors": dropped, "positions": cfg.positions.value,
              "tied_unembed": rel.tied_unembed, "final_logits_bias_present": has_final_bias,
              "linear_weight_nonzero_frac": nonzero,
              "norm_eps": "machine epsilon of the dtype" if norm_eps is None else norm_eps}
    write_json(out / IMPORT_RECORD, record)
    log(f"import-openai: {rel.n_layer} x {rel.d_model} model, {nonzero:.4%} of linear weights nonzero, positions "
        f"{cfg.positions.value}, sink {rel.sink}, bigram {cfg.bigram_table.value}; "
        + (f"ignored {', '.join(sorted(ignored))}; " if ignored else "") + f"-> {out}")
    return run_cfg


def _check_target(out: Path, overwrite: bool, what: str) -> None:
    """Refuse to write into a non-empty directory (or onto a file) unless `overwrite`; with it, an
    import replaces the whole directory, so no earlier run's files stay beside the new weights."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: already holds {what}; pass --force to replace them or choose another --out")


def _checked_release_weights(weights_path: Path, rel: ReleaseConfig, config_name: str
                             ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Their state dict, without the attention-mask buffers (returned by name), with every tensor the
    config implies present, of its shape, finite floating point; one-line errors otherwise."""
    sd = read_release_weights(weights_path)
    dropped = sorted(k for k in sd if _is_mask_buffer(k) and sd[k].dim() == 4)
    for k in dropped:
        del sd[k]
    expected = rel.expected_shapes()
    if rel.tied_unembed:  # one tensor under two names; either may be the one saved
        for a, b in (("lm_head.weight", "transformer.wte.weight"), ("transformer.wte.weight", "lm_head.weight")):
            if a not in sd and b in sd:
                sd[a] = sd[b]
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected) - OPTIONAL_TENSORS)
    if missing:
        raise UserError(f"{weights_path}: tensor {missing[0]!r} is missing ({len(missing)} in all) for the config in "
                        f"{config_name}; the files do not belong together")
    if extra:
        raise UserError(f"{weights_path}: unexpected tensor {extra[0]!r} ({len(extra)} in all) for the config in "
                        f"{config_name}; the files do not belong together")
    for name, shape in expected.items():
        if tuple(sd[name].shape) != shape:
            raise UserError(f"{weights_path}: tensor {name} has shape {tuple(sd[name].shape)}, the config says {shape}")
    if "final_logits_bias" in sd and tuple(sd["final_logits_bias"].shape) != (rel.vocab_size,):
        raise UserError(f"{weights_path}: final_logits_bias has shape {tuple(sd['final_logits_bias'].shape)}, "
                        f"expected ({rel.vocab_size},)")
    for name, t in sd.items():
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise UserError(f"{weights_path}: tensor {name} is not finite floating point; the file is damaged")
    return sd, dropped


# -- the name table, used both ways -------------------------------------------------------------
# Per block, in the order their state dict lists the tensors: (their suffix, our suffix) after
# "transformer.h.{i}." / "blocks.{i}.". Import reads the left name and writes the right one; export
# the other way round. The fused c_attn is split into (joined from) QKV in their order.
BLOCK_NORMS = (("ln_1.weight", "ln_1.weight"), ("ln_2.weight", "ln_2.weight"))
FUSED_QKV = ("attn.c_attn", ("attn.c_q", "attn.c_k", "attn.c_v"))
BLOCK_LINEARS = (("attn.c_proj", "attn.c_proj"), ("mlp.c_fc", "mlp.c_fc"), ("mlp.c_proj", "mlp.c_proj"))
SINK = ("attn.attn_imp.sink_logit", "attn.sink_logit")
POSITION_NORMS = (("ln_p1.weight", "attn.ln_pos.weight"), ("ln_p2.weight", "mlp.ln_pos.weight"))
FINAL_NORM = ("transformer.ln_f.weight", "ln_f.weight")


def block_prefixes(i: int) -> tuple[str, str]:
    return f"transformer.h.{i}.", f"blocks.{i}."


def _our_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of our GPT's state dict, without allocating it."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}


def _to_ours(sd: dict[str, torch.Tensor], rel: ReleaseConfig, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    # No copy where the dtype is already ours: the new file is written straight from the
    # memory-mapped source (peak memory ~1x the checkpoint instead of 2x).
    f32 = lambda t: t.detach().to(torch.float32).contiguous()
    zeros = lambda n: torch.zeros(n)
    ours = {"wte.weight": f32(sd["transformer.wte.weight"]),
            FINAL_NORM[1]: f32(sd[FINAL_NORM[0]]),
            "lm_head.weight": f32(sd["lm_head.weight"]).clone() if rel.tied_unembed else f32(sd["lm_head.weight"]),
            "lm_head.bias": f32(sd["final_logits_bias"]) if "final_logits_bias" in sd else zeros(rel.vocab_size)}
    if cfg.positions == Positions.LEARNED:
        ours["wpe.weight"] = f32(sd["transformer.wpe.weight"])
    elif cfg.positions == Positions.CONCAT:
        ours["pos_channels"] = f32(sd["transformer.wpe.weight"])
    if rel.enable_bigram_table:
        ours["bigram"] = f32(sd["bigram_table"])
    width = rel.n_head * rel.d_head
    for i in range(rel.n_layer):
        p, q = block_prefixes(i)
        for theirs, own in BLOCK_NORMS:
            ours[q + own] = f32(sd[p + theirs])
        fused, split = FUSED_QKV
        w = sd[p + fused + ".weight"]
        b = sd[p + fused + ".bias"] if rel.bias else zeros(3 * width)
        for j, name in enumerate(split):
            ours[q + name + ".weight"] = f32(w[j * width:(j + 1) * width])
            ours[q + name + ".bias"] = f32(b[j * width:(j + 1) * width])
        for (theirs, own), d_out in zip(BLOCK_LINEARS, (rel.d_model, rel.d_mlp, rel.d_model)):
            ours[q + own + ".weight"] = f32(sd[p + theirs + ".weight"])
            ours[q + own + ".bias"] = f32(sd[p + theirs + ".bias"]) if rel.bias else zeros(d_out)
        if rel.sink:
            ours[q + SINK[1]] = f32(sd[p + SINK[0]])
        if rel.d_pos_emb is not None:
            for theirs, own in POSITION_NORMS:
                ours[q + own] = f32(sd[p + theirs])
    return ours


# -- export ------------------------------------------------------------------------------------

def release_config(cfg: ModelConfig) -> dict:
    """Our ModelConfig as their GPTConfig keyword arguments; a one-line error for what their
    forward cannot compute."""
    fracs = set(cfg.activation_topk.values())
    if len(fracs) > 1:
        raise UserError("model.activation_topk: their format has one afrac for every sparsified location; "
                        f"this model uses {sorted(fracs)}")
    if cfg.positions == Positions.CONCAT and not cfg.positions_at_input_site and (
            {NodeLocation.ATTN_IN, NodeLocation.MLP_IN} & set(cfg.activation_topk)):
        raise UserError("model.positions 'concat' joins the position channels after AbsTopK at the input sites; "
                        "their forward applies AbsTopK to [x, positions], so this model cannot be exported "
                        "(train with model.positions_at_input_site true, or positions none / learned)")
    by_loc = {loc: name for name, loc in LOCTYPES.items()}
    concat = cfg.positions == Positions.CONCAT
    return {
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "d_head": cfg.d_head, "d_model": cfg.d_model,
        "d_mlp": cfg.d_mlp, "block_size": cfg.context, "vocab_size": cfg.vocab_size, "bias": True,
        "ln_bias": False, "rms_norm": True, "activation_type": "gelu", "residual_activation_type": "identity",
        "afrac": fracs.pop() if fracs else None,
        "afrac_loctypes": ",".join(by_loc[loc] for loc in NodeLocation if loc in cfg.activation_topk),
        "tied_unembed": False, "enable_bigram_table": cfg.bigram_table != BigramTable.NONE,
        "learnable_bigram_table": cfg.bigram_table == BigramTable.LEARNABLE,
        "d_pos_emb": cfg.d_pos if concat else None, "sink": cfg.attention_sink,
        "flash": True, "dropout": 0.0, "grad_checkpointing": False,
    }


def _write_export(out: Path, run: Run, cfg: RunConfig, config: dict, tok, model: GPT) -> None:
    """The release's files for `model` in `out`."""
    order = torch.tensor(export_bpe(tok, out))
    s = {k: v.detach() for k, v in model.state_dict().items()}
    sd = {"transformer.wte.weight": s["wte.weight"][order],
          "transformer.wpe.weight": (s["wpe.weight"] if "wpe.weight" in s else s["pos_channels"]
                                     if "pos_channels" in s else torch.zeros(cfg.model.context, cfg.model.d_model)),
          FINAL_NORM[0]: s[FINAL_NORM[1]],
          "lm_head.weight": s["lm_head.weight"][order], "final_logits_bias": s["lm_head.bias"][order]}
    if "bigram" in s:
        sd["bigram_table"] = s["bigram"][order][:, order]
    for i in range(cfg.model.n_layer):
        p, q = block_prefixes(i)
        for theirs, own in BLOCK_NORMS:
            sd[p + theirs] = s[q + own]
        fused, split = FUSED_QKV
        for kind in ("weight", "bias"):
            sd[p + f"{fused}.{kind}"] = torch.cat([s[q + f"{name}.{kind}"] for name in split])
        for theirs, own in BLOCK_LINEARS:
            sd[p + theirs + ".weight"], sd[p + theirs + ".bias"] = s[q + own + ".weight"], s[q + own + ".bias"]
        if cfg.model.attention_sink:
            sd[p + SINK[0]] = s[q + SINK[1]]
        if cfg.model.positions == Positions.CONCAT:
            for theirs, own in POSITION_NORMS:
                sd[p + theirs] = s[q + own]
    sd = {k: v.contiguous().clone() for k, v in sd.items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        torch.save(sd, tmp)
    write_json(out / CONFIG_FILE, config)
    write_json(out / EXPORT_SIDECAR, {"note": "written by sparse-circuits export-openai; their code ignores this file",
                                      "source_run": str(run.dir.resolve()), "model": to_dict(cfg.model)})


def export_openai(run_dir: str | os.PathLike, out_dir: str | os.PathLike, log=print, overwrite: bool = False) -> dict:
    """Write a run's model in the release's format: beeg_config.json, final_model.pt (tensors
    only), encoder.json + vocab.bpe with the data-gym id layout (weights permuted to match), and
    sparse_circuits.json (our config, so that importing it back is exact)."""
    run, out = Run(run_dir), Path(out_dir)
    _check_target(out, overwrite, "files")
    cfg = run.config()
    config = release_config(cfg.model)
    tok = run.tokenizer()
    model, _ = run.load_model(sparse_threshold=0.0)
    # Written into a staging directory beside --out and renamed into place: a failure (a full disk)
    # leaves the earlier export, or nothing, never half of one.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; an export gets the usual permissions
    try:
        _write_export(staging, run, cfg, config, tok, model)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        fsync_path(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    eps_note = None
    if cfg.model.norm_eps is not None:
        eps_note = _eps_difference(model, cfg.model)
        log(f"export-openai: note: this model's RMSNorm epsilon is {cfg.model.norm_eps:g}; their forward uses the "
            f"dtype's machine epsilon, which moves its logits by up to {eps_note:.2e} on a test batch "
            f"(importing the export back is exact)")
    log(f"export-openai: {cfg.model.n_layer} x {cfg.model.d_model} model -> {out} ({WEIGHTS_FILE}, {CONFIG_FILE}, "
        f"{ENCODER_FILE}, {MERGES_FILE}); open it with their load_model(dir, flash=True)")
    return {"config": config, "max_logit_change_from_norm_eps": eps_note}


@torch.no_grad()
def _eps_difference(model: GPT, cfg: ModelConfig) -> float:
    """Largest logit change when the model's RMSNorms use the machine epsilon instead of its own."""
    idx = torch.randint(0, cfg.vocab_size, (4, min(64, cfg.context)), generator=torch.Generator().manual_seed(0))
    before = model(idx)
    norms = [m for m in model.modules() if isinstance(m, RMSNorm)]
    saved = [m.eps for m in norms]
    for m in norms:
        m.eps = None
    try:
        after = model(idx)
    finally:
        for m, e in zip(norms, saved):
            m.eps = e
    return float((after - before).abs().max())
