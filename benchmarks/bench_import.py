"""Peak memory of `import-openai` on a synthetic checkpoint of a released model's size.

    python benchmarks/bench_import.py [--shape 8x2048] [--workdir /tmp/bench-import] [--out benchmarks/results]

Writes a checkpoint in the release's format (csp_yolo2's shape by default: 8 x 2048, d_mlp 8192,
sinks, bigram table; random weights, 1/1000 nonzero, as dense tensors with zeros like theirs),
then imports it in a fresh child process and reports that process's peak resident memory
against the checkpoint's size (goal: <= ~2x), the time, and the time to load the imported model.
Writes import.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import machine, write_result  # benchmarks/ (this script's directory)

SHAPES = {"8x2048": dict(n_layer=8, d_model=2048, d_mlp=8192), "8x256": dict(n_layer=8, d_model=256, d_mlp=1024)}
CHILD = r"""
import resource, sys, time, json
t0 = time.perf_counter()
from sparse_circuits.interop import import_openai
import_openai(sys.argv[1], sys.argv[2], tokenizer_dir=sys.argv[3], log=lambda *_: None)
t1 = time.perf_counter()
peak_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
from sparse_circuits.runs import load_model
model, _ = load_model(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "import_peak_rss": peak_import, "load_s": t2 - t1,
                  "peak_rss_after_load": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_checkpoint(src: Path, tok_dir: Path, n_layer: int, d_model: int, d_mlp: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_interop import write_bpe  # the hand-written tinypython-like BPE files

    vocab = write_bpe(tok_dir)
    cfg = {"n_layer": n_layer, "n_head": d_model // 16, "d_head": 16, "d_model": d_model, "d_mlp": d_mlp,
           "block_size": 256, "vocab_size": vocab, "bias": True, "rms_norm": True, "afrac": 0.125,
           "afrac_loctypes": "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out",
           "tied_unembed": False, "enable_bigram_table": True, "sink": True, "flash": True}
    g = torch.Generator().manual_seed(0)

    def sparse(*shape):
        t = torch.zeros(*shape)
        n = t.numel()
        k = max(1, n // 1000)
        t.view(-1)[torch.randint(0, n, (k,), generator=g)] = torch.randn(k, generator=g)
        return t

    sd = {"transformer.wte.weight": sparse(vocab, d_model), "transformer.wpe.weight": torch.zeros(256, d_model),
          "transformer.ln_f.weight": torch.ones(d_model), "lm_head.weight": sparse(vocab, d_model),
          "final_logits_bias": torch.zeros(vocab), "bigram_table": torch.randn(vocab, vocab, generator=g)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        sd |= {p + "ln_1.weight": torch.ones(d_model), p + "ln_2.weight": torch.ones(d_model),
               p + "attn.c_attn.weight": sparse(3 * d_model, d_model), p + "attn.c_attn.bias": sparse(3 * d_model),
               p + "attn.c_proj.weight": sparse(d_model, d_model), p + "attn.c_proj.bias": sparse(d_model),
               p + "mlp.c_fc.weight": sparse(d_mlp, d_model), p + "mlp.c_fc.bias": sparse(d_mlp),
               p + "mlp.c_proj.weight": sparse(d_model, d_mlp), p + "mlp.c_proj.bias": sparse(d_model),
               p + "attn.attn_imp.sink_logit": torch.zeros(d_model // 16)}
    src.mkdir(parents=True, exist_ok=True)
    (src / "beeg_config.json").write_text(json.dumps(cfg))
    torch.save(sd, src / "final_model.pt")
    return sum(t.numel() for t in sd.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=list(SHAPES), default="8x2048")
    ap.add_argument("--workdir", default="/tmp/bench-import")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    src, tok, run = work / "release", work / "tok", work / "run"
    t0 = time.perf_counter()
    params = write_checkpoint(src, tok, **SHAPES[args.shape])
    size = (src / "final_model.pt").stat().st_size
    print(f"synthetic {args.shape} checkpoint: {params / 1e6:.0f}M parameters, {size / 2**30:.2f} GiB "
          f"(written in {time.perf_counter() - t0:.0f} s)", flush=True)
    r = subprocess.run([sys.executable, "-c", CHILD, str(src), str(run), str(tok)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    child = json.loads(r.stdout.strip().splitlines()[-1])
    row = {"shape": args.shape, "params": params, "checkpoint_bytes": size, **child,
           "import_peak_over_size": child["import_peak_rss"] / size,
           "load_peak_over_size": child["peak_rss_after_load"] / size,
           "baseline_rss_of_python_torch": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    print(f"  import: {child['import_s']:.1f} s, peak RSS {child['import_peak_rss'] / 2**30:.2f} GiB = "
          f"{row['import_peak_over_size']:.2f}x the checkpoint (goal <= ~2x)")
    print(f"  then load_model: {child['load_s']:.1f} s, peak RSS of the process {child['peak_rss_after_load'] / 2**30:.2f} "
          f"GiB = {row['load_peak_over_size']:.2f}x")
    write_result(Path(args.out) / f"import-{args.shape}.json", {"machine": machine(torch.get_num_threads()), **row})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
