#!/usr/bin/env python
"""Hostile probe of ``llm-rec serve``: what an attacker sends, through every door, on 127.0.0.1 only.

Starts a real server (``llm-rec serve --bundle``, a bundle fitted in seconds on the bundled MovieLens
sample with popularity + co-occurrence, so chat sentences reach the agent), a canary HTTP listener on
127.0.0.1 that counts any request it receives, and a canary file holding a secret. Then sends the
hostile requests (schema ``$ref`` to the file, to http (the canary), to the server itself, huge,
deep and exponential schemas, catastrophic regexes, lone surrogates, NUL, overlong UTF-8, RTL
overrides and 1 MB strings in every text field, streaming and not) one after another while a
background task polls ``/health`` every 50 ms. Asserts: 0 responses 5xx, 0 transport errors,
0 canary hits, ``/health`` p99 < 200 ms, the secret (and the canary file's content) in no response
body and not in the server log, and no query string in the log. Exits 1 if any fails.

    python eval/probe_hostile.py                       # writes eval/results/probe_hostile.json
    python eval/probe_hostile.py --bundle DIR --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SECRET = "PROBE-SECRET-4b1d2e9a"
HEALTH_P99_LIMIT_MS = 200.0


class Canary:
    def __init__(self) -> None:
        canary = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                canary.hits += 1
                body = json.dumps({"enum": [SECRET]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_bundle(folder: Path) -> Path:
    from llm_recommender.bundle import FitConfig
    from llm_recommender.bundle import fit_bundle as fit

    cfg = FitConfig(dataset="ml-latest-small", components=["popularity", "cooccurrence"], valid_users=100, min_gain=-1.0)
    return fit(cfg, folder, log=lambda m: None)


# ---- the hostile requests ----------------------------------------------------------------------------

BAD_TEXT: dict[str, Any] = {
    "lone_surrogate": "x\ud800y",
    "low_surrogate": "\udfff",
    "nul": "Alien\x00(1979)",
    "rtl_override": "\u202eAlien (1979)\u202c",
    "noncharacter_bom": "\ufeff\uffffAlien",
    "overlong_utf8": b"\xc0\xaf",  # raw bytes spliced into the body: not UTF-8 at all
    "one_mb": "a" * 1_000_000,
}
PLACEHOLDER = "@@BAD@@"


def body_bytes(payload: Any, bad: Any) -> bytes:
    """The JSON body with ``bad`` where PLACEHOLDER stands (raw bytes for the overlong case)."""
    raw = json.dumps(payload)
    if isinstance(bad, bytes):
        return raw.encode().replace(PLACEHOLDER.encode(), bad)
    return raw.replace(PLACEHOLDER, json.dumps(bad)[1:-1]).encode()


def requests_for(model: str, canary: Canary, server_url: str, files: dict[str, Path]) -> list[dict[str, Any]]:
    cands = [{"id": "1", "title": "Toy Story (1995)"}, {"id": "260", "title": "Star Wars (1977)"}]
    rank = {"history": [{"id": "1196", "title": "Empire Strikes Back (1980)", "rating": 5}], "candidates": cands, "top_k": 2}
    out: list[dict[str, Any]] = []

    def chat_json(schema: Any, *, stream: bool, title: str = "Toy Story (1995)") -> dict[str, Any]:
        req = {**rank, "candidates": [{"id": "1", "title": title}, cands[1]]}
        return {"model": model, "stream": stream, "messages": [{"role": "user", "content": json.dumps(req)}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}

    deep: Any = {"type": "object"}
    for _ in range(40):
        deep = {"properties": {"x": deep}}
    very_deep = "@@DEEP@@"  # spliced in as raw JSON: 3,000 nested arrays (json.dumps cannot write them)
    # 2**30 evaluations from a 2 KB schema: each level's anyOf refers twice to the level below (both fail).
    expo_defs: dict[str, Any] = {"l0": {"type": "integer"}}
    for i in range(1, 31):
        expo_defs[f"l{i}"] = {"anyOf": [{"$ref": f"#/$defs/l{i - 1}"}, {"$ref": f"#/$defs/l{i - 1}"}]}
    items_title = lambda s: {"type": "object", "properties": {"items": {"type": "array", "items": {  # noqa: E731
        "type": "object", "properties": {"title": s}}}}}
    schemas: list[tuple[str, Any, str]] = [
        ("ref_file_canary", {"$ref": files["secret"].as_uri()}, ""),
        ("ref_file_nested", items_title({"$ref": files["secret"].as_uri()}), ""),
        ("ref_file_etc_passwd", {"$ref": "file:///etc/passwd"}, ""),
        ("ref_file_missing", {"$ref": files["missing"].as_uri()}, ""),
        ("ref_file_not_json", {"$ref": files["text"].as_uri()}, ""),
        ("ref_http_canary", {"$ref": canary.url + "/schema.json"}, ""),
        ("ref_http_canary_nested", items_title({"$ref": canary.url + "/t.json"}), ""),
        ("dynamic_ref_canary", {"$dynamicRef": canary.url + "/d.json"}, ""),
        ("recursive_ref_canary", {"$recursiveRef": canary.url + "/r.json"}, ""),
        ("id_canary_relative_ref", {"$id": canary.url + "/base/", "$ref": "other.json"}, ""),
        ("schema_dialect_canary", {"$schema": canary.url + "/meta", "type": "object"}, ""),
        ("ref_self_openapi", {"$ref": server_url + "/openapi.json"}, ""),
        ("ref_self_health", items_title({"$ref": server_url + "/health"}), ""),
        ("ref_local_missing", {"$ref": "#/$defs/nowhere"}, ""),
        ("ref_local_loop", {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, ""),
        ("schema_huge", {"type": "object", "properties": {f"p{i}": {"description": "x" * 200} for i in range(2000)}}, ""),
        ("schema_deep_40", deep, ""),
        ("schema_very_deep_3000", very_deep, ""),
        ("schema_exponential_anyof", {"$defs": expo_defs, "type": "object", "properties": {"items": {"items": {
            "properties": {"id": {"$ref": "#/$defs/l30"}}}}}}, ""),
        ("regex_catastrophic_title", items_title({"type": "string", "pattern": "^(a+)+$"}), "a" * 27 + "!"),
        ("regex_catastrophic_2", items_title({"type": "string", "pattern": "^(\\w+\\s?)*$"}), "a" * 40 + "!"),
        ("regex_pattern_properties", {"type": "object", "patternProperties": {"^(a+)+$": {}},
                                      "additionalProperties": False}, ""),
        ("regex_invalid", items_title({"type": "string", "pattern": "(unclosed"}), ""),
        ("regex_unevaluated_mix", {"patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False}, ""),
        ("schema_not_object", ["not", "a", "schema"], ""),
        ("schema_surrogate_in_pattern", items_title({"type": "string", "pattern": "\ud800+"}), ""),
    ]
    for stream in (False, True):
        for label, schema, title in schemas:
            body = chat_json(schema, stream=stream, **({"title": title} if title else {}))
            content = json.dumps(body).replace('"@@DEEP@@"', "[" * 3000 + '"x"' + "]" * 3000).encode()
            out.append({"label": f"schema/{label}" + ("/stream" if stream else ""), "door": "chat_json_schema",
                        "method": "POST", "path": "/v1/chat/completions", "content": content})

    # Bad text in every text field of every door.
    fields: list[tuple[str, str, Any]] = [
        ("native/candidate_id", "/v1/recommendations", {**rank, "candidates": [{"id": PLACEHOLDER, "title": "T"}, cands[1]]}),
        ("native/candidate_title", "/v1/recommendations", {**rank, "candidates": [{"id": "9", "title": PLACEHOLDER}, cands[1]]}),
        ("native/description", "/v1/recommendations",
         {**rank, "candidates": [{"id": "9", "title": "T", "description": PLACEHOLDER}, cands[1]]}),
        ("native/attribute", "/v1/recommendations",
         {**rank, "candidates": [{"id": "9", "title": "T", "attributes": {"genres": [PLACEHOLDER]}}, cands[1]]}),
        ("native/history_title", "/v1/recommendations", {**rank, "history": [{"id": "h", "title": PLACEHOLDER}]}),
        ("native/history_timestamp", "/v1/recommendations",
         {**rank, "history": [{"id": "h", "title": "H", "timestamp": PLACEHOLDER}]}),
        ("native/strategy", "/v1/recommendations", {**rank, "strategy": PLACEHOLDER}),
        ("chat/model", "/v1/chat/completions", {"model": PLACEHOLDER, "messages": [{"role": "user", "content": "hi"}]}),
        ("chat/sentence", "/v1/chat/completions",
         {"model": model, "messages": [{"role": "user", "content": f"I loved Alien {PLACEHOLDER}, 3 movies please"}]}),
        ("chat/sentence_stream", "/v1/chat/completions", {"model": model, "stream": True,
         "messages": [{"role": "user", "content": f"I loved {PLACEHOLDER} and Heat, recommend me something"}]}),
        ("chat/json_message", "/v1/chat/completions", {"model": model, "messages": [
            {"role": "user", "content": json.dumps({**rank, "candidates": [{"id": "9", "title": PLACEHOLDER}, cands[1]]})}]}),
        ("chat/recommendation_field", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "x"}],
         "recommendation": {**rank, "candidates": [{"id": PLACEHOLDER, "title": "T"}, cands[1]]}}),
        ("chat/name", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi", "name": PLACEHOLDER}]}),
        ("chat/user", "/v1/chat/completions", {"model": model, "user": PLACEHOLDER,
                                              "messages": [{"role": "user", "content": "I loved Alien"}]}),
        ("chat/text_part", "/v1/chat/completions", {"model": model, "stream": True, "messages": [
            {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER}]}]}),
        ("chat/schema_name", "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": json.dumps(rank)}],
         "response_format": {"type": "json_schema", "json_schema": {"name": PLACEHOLDER, "schema": {"type": "object"}}}}),
    ]
    for kind, bad in BAD_TEXT.items():
        for label, path, payload in fields:
            out.append({"label": f"text/{kind}/{label}", "door": label.split("/")[0], "method": "POST", "path": path,
                        "content": body_bytes(payload, bad)})
    for label, suffix in [("surrogate", "%ED%A0%80"), ("nul", "%00"), ("overlong", "%C0%AF"), ("rtl", "%E2%80%AE"),
                          ("long", "a" * 8000), ("dotdot", "..%2F..%2Fetc%2Fpasswd")]:
        out.append({"label": f"models/{label}", "door": "models", "method": "GET", "path": "/v1/models/" + suffix})
    out.append({"label": "query/api_key", "door": "models", "method": "GET", "path": f"/v1/models?api_key={SECRET}"})
    out.append({"label": "query/api_key_health", "door": "health", "method": "GET", "path": f"/health?api_key={SECRET}"})
    return out


# ---- running them ---------------------------------------------------------------------------------------


async def probe(url: str, reqs: list[dict[str, Any]], request_timeout: float) -> dict[str, Any]:
    health_ms: list[float] = []
    health_at: list[float] = []
    stop = asyncio.Event()

    async def poll() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    await c.get("/health")
                    health_ms.append((time.perf_counter() - t) * 1000)
                except httpx.HTTPError:
                    health_ms.append(10_000.0)
                health_at.append(t)
                await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout) as c:
        await asyncio.sleep(0.3)
        for r in reqs:
            t = time.perf_counter()
            row: dict[str, Any] = {"label": r["label"], "door": r["door"]}
            try:
                resp = await c.request(r["method"], r["path"], content=r.get("content"),
                                       headers={"content-type": "application/json"} if r.get("content") else None)
                text = resp.text
                row.update(status=resp.status_code, bytes=len(resp.content))
                try:
                    err = resp.json().get("error") if resp.headers.get("content-type", "").startswith("application/json") else None
                except ValueError:
                    err = None
                if isinstance(err, dict):
                    row.update(param=err.get("param"), code=err.get("code"))
                    if set(err) != {"message", "type", "param", "code"}:
                        row["bad_error_shape"] = True
                row["leak"] = SECRET in text
            except httpx.HTTPError as exc:
                row.update(status=None, transport_error=type(exc).__name__)
            row["ms"] = round((time.perf_counter() - t) * 1000, 1)
            row["span"] = (t, time.perf_counter())
            rows.append(row)
    stop.set()
    await poller
    # Which request was in flight during each of the slowest /health polls.
    slow = sorted(range(len(health_ms)), key=lambda i: -health_ms[i])[:5]
    worst = [{"health_ms": round(health_ms[i], 1), "during": [r["label"] for r in rows
              if r["span"][0] <= health_at[i] + health_ms[i] / 1000 and r["span"][1] >= health_at[i]]} for i in slow]
    for r in rows:
        r.pop("span")
    return {"rows": rows, "health_ms": health_ms, "slowest_health": worst}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1) if s else float("nan")


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--bundle", type=Path, help="a fitted bundle folder (default: fit one in a temporary folder, seconds)")
    p.add_argument("--json", type=Path, default=REPO / "eval" / "results" / "probe_hostile.json", help="result file")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request before it counts as failed")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="probe-hostile-"))
    files = {"secret": work / "canary.json", "missing": work / "missing.json", "text": work / "notes.txt"}
    files["secret"].write_text(json.dumps({"enum": [SECRET]}))
    files["text"].write_text(f"not json; {SECRET}")
    canary = Canary()
    start = time.perf_counter()
    bundle = args.bundle or fit_bundle(work / "bundle")
    fit_s = time.perf_counter() - start
    port = free_port()
    log_path = work / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "llm_recommender.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
           "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise SystemExit("the server did not become ready")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        model = httpx.get(url + "/v1/models", timeout=5).json()["data"][0]["id"]
        reqs = requests_for(model, canary, url, files)
        t0 = time.perf_counter()
        out = asyncio.run(probe(url, reqs, args.request_timeout))
        probe_s = time.perf_counter() - t0
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # by PID: the server this script started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        canary.httpd.shutdown()
    server_log = log_path.read_text(errors="replace")
    rows, health = out["rows"], out["health_ms"]
    statuses = Counter(str(r.get("status")) for r in rows)
    checks = {
        "responses_5xx": sum(1 for r in rows if (r.get("status") or 0) >= 500),
        "transport_errors": sum(1 for r in rows if r.get("status") is None),
        "bad_error_shape": sum(1 for r in rows if r.get("bad_error_shape")),
        "canary_hits": canary.hits,
        "secret_in_response_bodies": sum(1 for r in rows if r.get("leak")),
        "secret_in_server_log": server_log.count(SECRET),
        "query_strings_in_server_log": server_log.count("api_key"),
        "tracebacks_in_server_log": server_log.count("Traceback"),
        "health_p99_ms": pct(health, 0.99),
        "server_alive_after": alive,
    }
    failures = [k for k in ("responses_5xx", "transport_errors", "bad_error_shape", "canary_hits", "secret_in_response_bodies",
                            "secret_in_server_log", "query_strings_in_server_log", "tracebacks_in_server_log") if checks[k]]
    if not checks["health_p99_ms"] < HEALTH_P99_LIMIT_MS:
        failures.append("health_p99_ms")
    if not alive:
        failures.append("server_alive_after")
    if len(rows) < 60:
        failures.append("fewer_than_60_requests")
    result = {
        "command": " ".join(["python eval/probe_hostile.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(), "machine": platform.processor() or platform.machine(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None,
        "requests": len(rows), "by_door": dict(Counter(r["door"] for r in rows)), "statuses": dict(statuses),
        "health": {"polls": len(health), "p50_ms": pct(health, 0.5), "p99_ms": pct(health, 0.99),
                   "max_ms": round(max(health), 1) if health else None, "limit_p99_ms": HEALTH_P99_LIMIT_MS,
                   "slowest_polls": out["slowest_health"]},
        "slowest_request_ms": max(r["ms"] for r in rows), "fit_s": round(fit_s, 1), "probe_s": round(probe_s, 1),
        "checks": checks, "failures": failures, "passed": not failures, "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, ensure_ascii=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
