"""Why the first slot readout of the llm_ranker (log p of a mark word shown after each candidate's soft token)
did not learn on the real model: the mark word repeats after every candidate, and the pretrained LLM copies it in context, so its log-probability saturates towards 0
down the list (the gradient of log p is 1 - p) and the first candidates carry a large position effect.

Prints log p(" yes") right after each candidate's item position (a "#" token standing in for the soft token)
of a 20-candidate list, on the embedded SmolLM2-135M, untrained.

    python eval/probe_readout_saturation.py
"""

from __future__ import annotations

import json


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recommender.model_store import ensure_converted

    torch.set_num_threads(1)
    path = str(ensure_converted())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    letters, READOUT_MARK = "ABCDEFGHIJKLMNOPQRST", " yes"  # the first slot readout's mark word
    text = "Candidates:\n<candidates>\n" + "".join(f"{c}. #{READOUT_MARK}\n" for c in letters)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    mark = tok(READOUT_MARK, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    values = [round(float(lp[i, mark]), 3) for i in range(len(ids) - 1) if ids[i + 1] == mark]
    print(json.dumps({"model": path.rsplit("/", 1)[-1], "mark": READOUT_MARK,
                      "log_p_mark_after_candidate": values}))


if __name__ == "__main__":
    main()
