"""Reading the input, and the output folder of parts that makes a job resumable.

Each finished batch of users is written as one part file (``part-<hash>.jsonl`` or
``.parquet``): first to a temporary name, then renamed, so a part is either complete or
absent, whatever moment the job is killed. The part's name is a hash of the keys in it, so
a batch that Ray retries overwrites its own part instead of adding a second copy. A rerun
reads the keys already written and skips those users.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from ..errors import InputDecodeError, InvalidRequestError, RecommenderError
from ..files import atomic_write
from ..protocol import MAX_CANDIDATES, Item, coerce_items
from .rows import output_key

Format = Literal["jsonl", "parquet"]
_TMP_PREFIX = ".tmp-"


def _format_of(path: Path, param: str) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InvalidRequestError(f"{path}: unknown format {suffix or '(no suffix)'}; use .jsonl or .parquet", param=param)


def read_rows(path: Path, param: str = "input") -> Iterator[tuple[int, Any]]:
    """(row index, row) pairs; a JSONL line that is not JSON comes back as an InputDecodeError."""
    if not path.is_file():
        raise InvalidRequestError(f"{path} does not exist", param=param)
    if _format_of(path, param) == "parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist())
        return
    with path.open("rb") as fh:
        index = 0
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield index, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield index, InputDecodeError(f"{path.name} line {lineno} is not valid UTF-8 JSON: {exc}", param="row")
            index += 1


def read_catalog(path: Path) -> list[Item]:
    rows = []
    for i, row in read_rows(path, "catalog"):
        if isinstance(row, RecommenderError):
            row.param = f"catalog[{i}]"
            raise row
        rows.append(row)
    items = coerce_items(rows, Item, "catalog")
    if not items or len(items) > MAX_CANDIDATES:
        raise InvalidRequestError(f"the catalogue has {len(items)} items; 1..{MAX_CANDIDATES} are allowed as candidates",
                                  param="catalog")
    return items


# ---- output parts ----------------------------------------------------------------------
def _schema() -> Any:
    import pyarrow as pa

    item = pa.struct([("id", pa.string()), ("title", pa.string()), ("rank", pa.int32()), ("score", pa.float64()),
                      ("probability", pa.float64()), ("reason", pa.string())])
    error = pa.struct([("message", pa.string()), ("type", pa.string()), ("code", pa.string()), ("param", pa.string())])
    return pa.schema([("user_id", pa.string()), ("row", pa.int64()), ("items", pa.list_(item)),
                      ("fallback_used", pa.bool_()), ("notes", pa.list_(pa.string())), ("error", error)])


def part_name(keys: list[str], fmt: Format) -> str:
    digest = hashlib.sha1("\n".join(sorted(keys)).encode("utf-8")).hexdigest()[:20]
    return f"part-{digest}.{fmt}"


def write_part(out_dir: Path, rows: list[dict[str, Any]], fmt: Format) -> Path:
    """Write one part atomically (temporary file + rename)."""
    final = out_dir / part_name([output_key(r) for r in rows], fmt)
    with atomic_write(final, prefix=f"{_TMP_PREFIX}{final.name}.") as tmp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    return final


def read_output(out_dir: Path) -> list[dict[str, Any]]:
    """All rows written so far, in part order (for tests and for merging)."""
    rows: list[dict[str, Any]] = []
    for part in sorted(out_dir.glob("part-*")):
        if part.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(part).to_pylist()
        else:
            with part.open(encoding="utf-8") as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def prepare_output(out_dir: Path, fmt: Format) -> set[str]:
    """Create the folder, drop temporary files of killed runs, and return the keys already written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    other = "parquet" if fmt == "jsonl" else "jsonl"
    if any(out_dir.glob(f"part-*.{other}")):
        raise InvalidRequestError(f"{out_dir} holds {other} parts from an earlier run; resume with the same format",
                                  param="output_format")
    for tmp in out_dir.glob(f"{_TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)
    return {output_key(r) for r in read_output(out_dir)}
