"""Mean activation of every node, recorded at exactly the site where masks act (after AbsTopK).

Means over pretraining tokens are cached in RUN_DIR/means.safetensors; the metadata names the
weights they were computed from, so stale means are recomputed rather than used.
"""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

from ..checkpoint import model_config_hash
from ..data import DataSplit, TokenData
from ..errors import UserError
from ..fileio import read_safetensors, read_safetensors_metadata, write_safetensors
from ..hooks import Hooks
from ..model import GPT
from ..runs import Run



@torch.no_grad()
def node_means(model: GPT, batches, progress: bool = True, desc: str = "means") -> dict[str, torch.Tensor]:
    """Mean over every token of every batch of each node site's activation (float64 sums)."""
    sites = model.node_sites()
    sums = {name: torch.zeros(site.width, dtype=torch.float64) for name, site in sites.items()}
    count = 0
    hooks = Hooks()
    for name in sites:
        hooks.add(name, _accumulate(name, sums))
    device = next(model.parameters()).device
    for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        model(idx.to(device), hooks)
        count += idx.numel()
    return {name: (s / count).float() for name, s in sums.items()}


@torch.no_grad()
def task_means(model: GPT, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
    """Mean of each node over every token of the task's prompts (grouped by length: no padding)."""
    by_length: dict[int, list[list[int]]] = {}
    for p in prompts:
        p = p[-model.cfg.context:]
        by_length.setdefault(len(p), []).append(p)
    return node_means(model, [torch.tensor(group) for group in by_length.values()], progress=False)


def _accumulate(name: str, sums: dict[str, torch.Tensor]):
    def fn(x: torch.Tensor) -> torch.Tensor:
        sums[name] += x.detach().reshape(-1, x.shape[-1]).double().sum(0).cpu()
        return x
    return fn


def pretraining_batches(data: TokenData, context: int, n_batches: int, batch_size: int = 32, seed: int = 1234):
    # A seed apart from training's, on the training split: the distribution the model was trained on.
    return [data.batch(DataSplit.TRAIN, batch_size, context, seed, i)[0] for i in range(n_batches)]


def load_or_compute_means(model: GPT, run_dir: str | os.PathLike, data_dir: str | os.PathLike,
                          n_batches: int = 64, batch_size: int = 32, progress: bool = True,
                          log=print) -> dict[str, torch.Tensor]:
    """Pretraining means of a run's model, from the cache when it matches the weights."""
    if n_batches < 1 or batch_size < 1:
        raise UserError(f"means: --batches must be >= 1 (batches of pretraining windows), got {n_batches}")
    run = Run(run_dir)
    path = run.means_path
    weights = run.weights_sha256()
    wanted = {"weights_sha256": weights, "model_config_sha": model_config_hash(model.cfg),
              "tokens": str(n_batches * batch_size * model.cfg.context)}
    if path.is_file():
        try:
            meta = read_safetensors_metadata(path, "node means cache")
            if all(meta.get(k) == v for k, v in wanted.items()):
                return read_safetensors(path, "node means cache")
        except UserError as e:  # a cache: damaged means recomputing it, not failing
            log(f"{e}; recomputing it")
    batches = pretraining_batches(TokenData(data_dir), model.cfg.context, n_batches, batch_size)
    means = node_means(model, batches, progress)
    write_safetensors(path, means, metadata=wanted)
    return means
