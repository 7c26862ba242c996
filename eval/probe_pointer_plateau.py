"""How long does a tiny transformer take to learn the llm_ranker's two readouts on a pure pointer task?

20 candidate slots, each an input vector proj(z_k) (+ a learned label vector); z ~ N(0, 1); the target is
argmax z. `label`: the answer is read at the last position over the 20 label tokens (the verbalizer: the
last position must attend to the best slot and copy its label); `slot`: each candidate's score is the logit
of a fixed token at its own slot (no attention hop). Fresh random cases every step; a random 2-layer Llama
(hidden 64, as the tests' tiny model); `--filler` tokens before the list stand in for the prompt's text.

    python eval/probe_pointer_plateau.py --readout label --lr 1e-3 --steps 1200 --filler 200
    python eval/probe_pointer_plateau.py --readout label --lr 3e-3 --steps 800 --filler 40
    python eval/probe_pointer_plateau.py --readout slot --lr 1e-3 --steps 400 --filler 40
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readout", choices=["label", "slot"], default="label")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--filler", type=int, default=40)
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, hidden = 20, 64
    model = LlamaForCausalLM(LlamaConfig(vocab_size=200, hidden_size=hidden, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=2048, tie_word_embeddings=True))
    labels = torch.arange(100, 100 + n)
    proj = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
    label_vectors = torch.nn.Parameter(model.get_input_embeddings().weight[labels].detach().clone())
    ids = [2] * args.filler + [t for k in range(n) for t in (int(labels[k]), 1)] + [3]  # 1: the slot
    slots = torch.tensor([args.filler + 2 * k + 1 for k in range(n)])
    opt = torch.optim.AdamW([*model.parameters(), *proj.parameters(), label_vectors], lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        z = torch.randn(args.batch, n)
        target = z.argmax(1)
        x = model.get_input_embeddings()(torch.tensor([ids] * args.batch)).clone()
        x[:, slots] = proj(z.reshape(-1, 1)).reshape(args.batch, n, hidden) + label_vectors[None]
        if args.readout == "slot":
            scores = model(inputs_embeds=x).logits[:, slots, 5]
        else:
            scores = model(inputs_embeds=x, logits_to_keep=1).logits[:, -1][:, labels]
        loss = torch.nn.functional.cross_entropy(scores, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            acc = float((scores.argmax(1) == target).float().mean())
            print(f"step {step}: loss {loss.item():.3f} (chance {torch.log(torch.tensor(float(n))):.3f}), "
                  f"batch top-1 {acc:.2f}, {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
