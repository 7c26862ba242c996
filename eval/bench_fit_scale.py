"""How fitting grows with data: the sequence component (and, with --bundle, a whole ``llm-rec fit``) on synthetic
MovieLens-like data at 0.1M and 1M interactions (10M with --with-10m).

    python eval/bench_fit_scale.py --sizes 1e5,1e6 --epochs 3 --threads 2
    python eval/bench_fit_scale.py --sizes 1e5 --bundle          # + the default components via bundle.fit

Per size it records, each configuration in its own subprocess (clean peak RSS and thread setting):

- ``steps``: milliseconds per training step over the first ``--profile-steps`` batches of an
  epoch, for the reference path (full-width batches), trimmed batches, trimmed + length-bucketed
  batches, and that with bf16 autocast; extrapolated to seconds per epoch.
- ``fit``: the sequence component fitted as ``llm-rec fit`` does it (training = every user's
  interactions before the validation target; early stopping on validation NDCG@10), for the
  reference and the fast path: seconds, peak RSS, epochs, best validation NDCG@10.

Results: eval/results/fit-scale/<name>.json and .md, with the command and the CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "eval" / "results" / "fit-scale"
PATHS = {  # name -> SequenceModelConfig changes
    "default": {},  # today's defaults: trim, cosine schedule at lr auto (6e-3 on item IDs alone, 3e-3 with text vectors) over a planned 1,000 steps, bf16 where the CPU has it
    "previous-default": {"trim": True, "bucket": False, "bf16": False, "lr": 1e-3, "lr_schedule": "constant",
                         "steps": None},  # the defaults until 2026-12-06
    "reference": {"trim": False, "bucket": False, "bf16": False},
    "trim": {"trim": True, "bucket": False, "bf16": False},
    "trim+bucket": {"trim": True, "bucket": True, "bf16": False},
    "trim+bucket+bf16": {"trim": True, "bucket": True, "bf16": True},
    "trim+bf16": {"trim": True, "bucket": False, "bf16": True},
    "full-softmax": {"loss": "full_softmax"},  # the defaults with the full softmax at any catalogue size
    "sampled-logq": {"loss": "sampled_logq"},  # the defaults with 2,048 frequency-drawn negatives, log-Q corrected
    "sampled-uniform": {"loss": "sampled"},  # the defaults with 2,048 uniform negatives, no correction needed
    "trim+bucket+sampled1024": {"trim": True, "bucket": True, "loss": "sampled", "n_negatives": 1024, "bf16": False},
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                extra = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
                return line.split(":", 1)[1].strip() + (f" ({', '.join(extra)})" if extra else " (no bf16 units)")
    except OSError:
        pass
    return platform.processor() or "unknown"


def ensure_data(size: float, root: Path, seed: int) -> Path:
    out = root / f"synth-{size:g}-s{seed}"
    if not (out / "ratings.dat").is_file():
        spec = importlib.util.spec_from_file_location("synth_data", ROOT / "eval" / "synth_data.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.main(["--interactions", f"{size:g}", "--out", str(out), "--seed", str(seed)])
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the child: one configuration, one process ---------------------------------------------


def _training_data(data_dir: str, seed: int, valid_users: int):
    import numpy as np

    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    ds = load_dataset("ml-1m", data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    data = TrainingData(space=space, sequences=[s for s in seqs if len(s)], seed=seed)
    data.validation = llmrank_cases(ds, split="valid", n_users=min(valid_users, len(splits)), n_candidates=20,
                                    seed=seed, history_len=50, splits=splits)
    return data


def child(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    t0 = time.perf_counter()
    data = _training_data(job["data_dir"], job["seed"], job["valid_users"])
    load_s = time.perf_counter() - t0
    model_cfg = {"epochs": 30, "patience": 3, "id_dropout": 0.1} | job["model"]
    out: dict[str, Any] = {"load_seconds": round(load_s, 1), "model": model_cfg, "threads": job["threads"],
                           "interactions": int(sum(len(s) for s in data.sequences)), "users": len(data.sequences),
                           "items": len(data.space)}
    if job["kind"] == "steps":
        from llm_recommender.scorers.learned._net import SequenceNet
        from llm_recommender.scorers.learned._training import _loss, batches, sampling_log_q
        from llm_recommender.scorers.learned.sequence_model import (
            SequenceModelConfig,
            _training_windows,
            resolve_bf16,
            resolve_loss,
        )

        cfg = SequenceModelConfig(**{**model_cfg, "use_text": False, "seed": job["seed"]})
        cfg = cfg.model_copy(update={"bf16": resolve_bf16(cfg.bf16), "loss": resolve_loss(cfg, len(data.space))})
        inputs, targets = _training_windows([s.tolist() for s in data.sequences], len(data.space), cfg)
        log_q = sampling_log_q(targets, len(data.space) + 1) if cfg.loss == "sampled_logq" else None
        lengths = np.maximum((inputs > 0).sum(1), 1)
        torch.manual_seed(cfg.seed)
        net = SequenceNet(len(data.space), 0, cfg)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
        inp_all, tgt_all = torch.from_numpy(inputs), torch.from_numpy(targets)
        all_b = batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, 0]), bucket=cfg.bucket)
        n = min(job["profile_steps"], len(all_b))
        times, widths = [], []
        for k, idx in enumerate(all_b[: n + 2]):  # 2 warm-up steps
            t = time.perf_counter()
            inp, tgt = inp_all[torch.from_numpy(idx)], tgt_all[torch.from_numpy(idx)]
            if cfg.trim:
                w = int(lengths[idx].max())
                inp, tgt = inp[:, -w:], tgt[:, -w:]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 is True):
                loss = _loss(net, cfg, inp, tgt, None, log_q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if k >= 2:
                times.append(time.perf_counter() - t)
                widths.append(inp.shape[1])
        ms = 1e3 * float(np.mean(times))
        out |= {"bf16": cfg.bf16, "loss": cfg.loss, "windows": len(inputs), "batches_per_epoch": len(all_b), "steps_timed": len(times),
                "ms_per_step": round(ms, 1), "mean_width": round(float(np.mean(widths)), 1),
                "epoch_seconds_estimate": round(ms * len(all_b) / 1e3, 1)}
    else:
        from llm_recommender.scorers.learned.sequence import SequenceComponent

        comp = SequenceComponent(data.space, {"text": "none", "model": model_cfg, "valid_cases": job["valid_cases"]})
        t1 = time.perf_counter()
        comp.fit(data)
        rec = comp.model.record
        out |= {"fit_seconds": round(time.perf_counter() - t1, 1), "epochs_run": rec["epochs_run"],
                "best_epoch": rec["best_epoch"], "best_valid_ndcg10": rec["best_valid"],
                "seconds_per_epoch": round(rec["fit_seconds"] / max(rec["epochs_run"], 1), 2),
                "windows": rec["n_windows"],
                "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                            for h in rec["history"]]}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def bundle_child(job: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    from llm_recommender.bundle import fit as bundle_fit

    cfg = bundle_fit.FitConfig(dataset="ml-1m", data_dir=Path(job["data_dir"]), seed=job["seed"], progress=False,
                               threads=job["threads"], valid_users=job["valid_users"],
                               component_config={"sequence": {"model": {"epochs": 30, "patience": 3, "id_dropout": 0.1}
                                                              | job["model"]}})
    steps: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle_fit.fit_bundle(cfg, Path(tmp) / "bundle", log=lambda m: steps.append((time.perf_counter() - t0, m)))
        manifest = json.loads((Path(tmp) / "bundle" / "bundle.json").read_text())
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "log": [f"{t:7.1f} s  {m}" for t, m in steps],
            "components": {c["name"]: {"fit_seconds": c["fit_seconds"], "validation": c["validation"]}
                           for c in manifest["components"]},
            "validation": manifest["validation"]}


def run_child(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(job["threads"]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = round(time.perf_counter() - t0, 1)
    return res


# ---- the parent ------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = ["| size | what | path | threads | ms/step | mean width | s/epoch | epochs (best) | valid NDCG@10 | "
            "fit s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, per in results["sizes"].items():
        for r in per:
            x = r["result"]
            if "error" in x:
                rows.append(f"| {size} | {r['kind']} | {r['path']} | {r['threads']} | error: "
                            f"{x['error'].splitlines()[-1][:80]} |||||||")
                continue
            if r["kind"] == "steps":
                rows.append(f"| {size} | steps | {r['path']} | {r['threads']} | {x['ms_per_step']} | {x['mean_width']} "
                            f"| {x['epoch_seconds_estimate']} (est.) | | | | {x['peak_rss_mb']} |")
            elif r["kind"] == "fit":
                rows.append(f"| {size} | fit | {r['path']} | {r['threads']} | | | {x['seconds_per_epoch']} | "
                            f"{x['epochs_run']} ({x['best_epoch']}) | {x['best_valid_ndcg10']:.4f} | {x['fit_seconds']} "
                            f"| {x['peak_rss_mb']} |")
            else:
                seq = x["components"].get("sequence", {})
                rows.append(f"| {size} | bundle.fit | {r['path']} | {r['threads']} | | | | | "
                            f"{seq.get('validation', {}).get('ndcg@10', '')} (sequence) | {x['wall_seconds']} "
                            f"| {x['peak_rss_mb']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="1e5,1e6", help="comma-separated interaction counts (default 1e5,1e6)")
    ap.add_argument("--with-10m", action="store_true", help="add 1e7 (needs several GB and a long time)")
    ap.add_argument("--paths", default="reference,trim+bucket",
                    help=f"training paths to fit fully, comma-separated, from {', '.join(PATHS)}")
    ap.add_argument("--step-paths", default=",".join(PATHS), help="training paths to time per step ('' for none)")
    ap.add_argument("--threads", default="2", help="torch thread counts, comma-separated (e.g. 1,2)")
    ap.add_argument("--epochs", type=int, default=30, help="epoch cap of the fits (the component's default is 30)")
    ap.add_argument("--profile-steps", type=int, default=30, help="steps timed per path (after 2 warm-up steps)")
    ap.add_argument("--valid-users", type=int, default=2000, help="validation cases drawn (as llm-rec fit)")
    ap.add_argument("--valid-cases", type=int, default=300, help="of which scored per epoch for early stopping")
    ap.add_argument("--bundle", action="store_true", help="also run llm_recommender.bundle.fit with the default "
                    "components, the sequence model on the first of --paths (needs the embedded LLM and MiniLM)")
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/fit-scale-data"), help="where synthetic data is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="{}", help="JSON of SequenceModelConfig settings laid over every path, e.g. "
                    "'{\"lr\": 3e-3, \"lr_schedule\": \"cosine\"}'")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--name", default="fit-scale", help="results file stem under eval/results/fit-scale/")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(bundle_child(job) if job["kind"] == "bundle" else child(job)))
        return 0

    try:
        overrides = json.loads(args.model)
    except json.JSONDecodeError as exc:
        ap.error(f"--model is not JSON: {exc}")
    if not isinstance(overrides, dict):
        ap.error("--model must be a JSON object")
    sizes = [float(s) for s in args.sizes.split(",") if s] + ([1e7] if args.with_10m else [])
    threads = [int(t) for t in args.threads.split(",") if t]
    fit_paths = [p for p in args.paths.split(",") if p]
    for p in [*fit_paths, *filter(None, args.step_paths.split(","))]:
        if p not in PATHS:
            ap.error(f"unknown path {p!r}; paths: {', '.join(PATHS)}")
    results: dict[str, Any] = {"command": "python eval/bench_fit_scale.py " + " ".join(argv or sys.argv[1:]),
                               "cpu": cpu_name(), "cores": os.cpu_count(), "epoch_cap": args.epochs,
                               "load_average_at_start": os.getloadavg()[0], "sizes": {}}
    for size in sizes:
        t0 = time.perf_counter()
        data_dir = ensure_data(size, args.data_root, args.seed)
        gen_s = time.perf_counter() - t0
        per: list[dict[str, Any]] = []
        results["sizes"][f"{size:g}"] = per
        base = {"data_dir": str(data_dir), "seed": args.seed, "valid_users": args.valid_users,
                "valid_cases": args.valid_cases, "profile_steps": args.profile_steps}
        jobs = [("steps", p, t) for t in threads for p in filter(None, args.step_paths.split(","))]
        jobs += [("fit", p, t) for t in threads for p in fit_paths]
        jobs += [("bundle", fit_paths[0] if fit_paths else "trim", t) for t in threads] if args.bundle else []
        for kind, path, t in jobs:
            job = base | {"kind": kind, "threads": t, "model": PATHS[path] | {"epochs": args.epochs} | overrides}
            res = run_child(job, args.timeout)
            per.append({"kind": kind, "path": path, "threads": t, "result": res})
            print(f"{size:g} {kind} {path} threads={t}: "
                  + json.dumps({k: v for k, v in res.items() if k not in ("history", "log")}), flush=True)
        results.setdefault("generate_seconds", {})[f"{size:g}"] = round(gen_s, 1)
    results["load_average_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    md = (f"# {args.name}\n\nCommand: `{results['command']}`  \nCPU: {results['cpu']}, {results['cores']} cores "
          f"(load average {results['load_average_at_start']:.1f} at start, {results['load_average_at_end']:.1f} at "
          f"end: the machine is shared)  \nEpoch cap: {args.epochs}; 'steps' rows time {args.profile_steps} steps "
          f"and extrapolate to an epoch.\n\n{table(results)}\n")
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
