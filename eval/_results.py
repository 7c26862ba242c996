"""What the benchmark scripts under eval/ share: the CPU to record beside a timing, and writing a result."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s first ``model name``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_and_write(result: dict[str, Any], out: str | Path | None) -> None:
    """Print ``result`` as JSON, and write it to ``out`` when given (folders made as needed)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
