"""A model with a planted circuit: weights written by hand so that exactly three nodes decide
whether token A or token B comes next, among hundreds of distractor nodes.

Task: the prompt ends in X or Y; after X the answer is A, after Y it is B.
Circuit: residual channel C carries +1 for X, -1 for Y (embedding) -> `0.mlp.act_in[C]` ->
neuron N = GELU(2 x + 8) (high for X, low for Y, in between for every other token) ->
`0.mlp.post_act[N]` -> writes (N - mean N) to channel D -> `0.mlp.resid_delta[D]` -> the
unembedding reads D: +D for A, -D for B. The neuron works in GELU's linear range and the
logits are not saturated, so the straight-through gradient sees every planted node.
Mean-ablating any of the three nodes makes A and B (nearly) equally likely. Every other node
(attention, 63 other neurons, other channels) only touches channels other than C and D.
"""

from __future__ import annotations

import torch

from sparse_circuits.config import BigramTable, ModelConfig
from sparse_circuits.model import GPT
from sparse_circuits.tasks.core import Example, Split, Task, TaskDataset

X, Y, A, B = 1, 2, 3, 4
VOCAB, D_MODEL, D_MLP = 40, 32, 64
C, D, N = 0, 1, 0
PLANTED = {"0.mlp.act_in": [C], "0.mlp.post_act": [N], "0.mlp.resid_delta": [D]}


def planted_model(seed: int = 0) -> GPT:
    g = torch.Generator().manual_seed(seed)
    cfg = ModelConfig(n_layer=1, d_model=D_MODEL, d_head=16, d_mlp=D_MLP, context=16, vocab_size=VOCAB,
                      attention_sink=True, bigram_table=BigramTable.NONE, activation_topk={})
    model = GPT(cfg).eval()
    other = slice(2, D_MODEL)  # distractor channels
    rnd = lambda *shape, s=0.3: torch.randn(*shape, generator=g) * s
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.blocks[0].ln_1, model.blocks[0].ln_2, model.ln_f):
            ln.weight.fill_(1.0)
        model.wte.weight[:, other] = rnd(VOCAB, D_MODEL - 2)
        model.wte.weight[X, C], model.wte.weight[Y, C] = 1.0, -1.0
        attn = model.blocks[0].attn
        for proj in (attn.c_q, attn.c_k, attn.c_v):
            proj.weight[:, other] = rnd(D_MODEL, D_MODEL - 2)
        attn.c_proj.weight[other, :] = rnd(D_MODEL - 2, D_MODEL, s=0.1)
        mlp = model.blocks[0].mlp
        mlp.c_fc.weight[1:, other] = rnd(D_MLP - 1, D_MODEL - 2)
        mlp.c_fc.weight[N, C] = 2.0
        mlp.c_fc.bias[N] = 8.0
        mlp.c_proj.weight[other, 1:] = rnd(D_MODEL - 2, D_MLP - 1, s=0.1)
        mlp.c_proj.weight[D, N] = 1.0
        model.lm_head.weight[:, other] = rnd(VOCAB, D_MODEL - 2)
        model.lm_head.weight[A, :] = 0.0
        model.lm_head.weight[B, :] = 0.0
        model.lm_head.weight[A, D], model.lm_head.weight[B, D] = 0.6, -0.6
    return model


def center_output(model: GPT, mean_neuron: float) -> None:
    """Make channel D zero on average: subtract the neuron's pretraining mean through the bias."""
    with torch.no_grad():
        model.blocks[0].mlp.c_proj.bias[D] = -mean_neuron


def pretraining_batches(n_batches: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (16, 16), generator=g) for _ in range(n_batches)]


def planted_dataset(n_pairs: int = 64, seed: int = 0) -> TaskDataset:
    g = torch.Generator().manual_seed(seed)
    task = Task("planted", "ends in X -> A, ends in Y -> B", ("A", "B"), lambda p: None)
    ds = TaskDataset(task, Split.TEST, seed, [])
    for i in range(n_pairs):
        filler = torch.randint(5, VOCAB, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        for label, (last, correct, wrong) in enumerate(((X, A, B), (Y, B, A))):
            ds.examples.append(Example("", "", "", "", label, i))
            ds.prompt_tokens.append(filler + [last])
            ds.correct_token.append(correct)
            ds.wrong_token.append(wrong)
    return ds


# A backup path, parallel to the planted circuit: channel C2 -> neuron N2 -> channel D2, read by the
# unembedding like D. Either path alone does the task; the whole model uses both.
C2, D2, N2 = 2, 3, 1
BACKUP = {"0.mlp.act_in": [C2], "0.mlp.post_act": [N2], "0.mlp.resid_delta": [D2]}


def planted_model_with_backup(seed: int = 0) -> GPT:
    model = planted_model(seed)
    two = slice(C2, D2 + 1)  # the backup's channels: no distractor reads or writes them
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    with torch.no_grad():
        model.wte.weight[:, two] = 0.0
        for proj in (attn.c_q, attn.c_k, attn.c_v):
            proj.weight[:, two] = 0.0
        attn.c_proj.weight[two, :] = 0.0
        mlp.c_fc.weight[:, two] = 0.0
        mlp.c_proj.weight[two, :] = 0.0
        model.lm_head.weight[:, two] = 0.0
        model.wte.weight[X, C2], model.wte.weight[Y, C2] = 1.0, -1.0
        mlp.c_fc.weight[N2] = 0.0
        mlp.c_fc.weight[N2, C2], mlp.c_fc.bias[N2] = 2.0, 8.0
        mlp.c_proj.weight[:, N2] = 0.0
        mlp.c_proj.weight[D2, N2] = 1.0
        model.lm_head.weight[A, D2], model.lm_head.weight[B, D2] = 0.6, -0.6
    return model


def center_backup(model: GPT, mean_neuron: float) -> None:
    with torch.no_grad():
        model.blocks[0].mlp.c_proj.bias[D2] = -mean_neuron
