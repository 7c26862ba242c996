"""Whether a model's LLM reasons are worth generating: the reason filter's rejection rate, kept per model."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class ReasonGate:
    """Whether LLM reasons are worth paying for with this model: the filter's rejection rate, measured on use.

    The first ``PROBE`` replies (on first use) decide: if ``MAX_REJECTED`` of them or more are rejected, the
    model's reasons are turned off and every later item gets the evidence reason up front, without a
    generation; a request never spends more than the probe on text thrown away. After the probe the rate is
    kept up to date and turns them off the same way (over at least ``PROBE`` replies)."""

    PROBE = 3
    MAX_REJECTED_RATE = 0.5

    def __init__(self, path: Path | None = None) -> None:
        self.asked = 0
        self.rejected = 0
        self.off = False
        self.logged = False
        self.path = path  # where the verdict is kept across processes (one CLI call each), if anywhere
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                self.asked, self.rejected = int(data["asked"]), int(data["rejected"])
                self.off = bool(data["off"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable verdict is measured again

    @classmethod
    def for_model(cls, model: str, cache: Path) -> ReasonGate:
        """The gate of ``model``, its verdict kept under the cache folder ``cache``."""
        key = hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
        return cls(cache / "reason_gate" / f"{key}.json")

    def record(self, rejected: bool) -> None:
        self.asked += 1
        self.rejected += int(rejected)
        if self.asked >= self.PROBE and self.rejected / self.asked >= self.MAX_REJECTED_RATE:
            self.off = True
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"asked": self.asked, "rejected": self.rejected, "off": self.off}))
        except OSError:
            log.debug("could not keep the reason gate's verdict in %s", self.path)

    def note(self, model: str) -> str:
        return (f"LLM reasons are off for model {model!r}: the reason filter rejected {self.rejected} of its first "
                f"{self.asked} replies, so these reasons are the evidence text, without generating")

    def warn_once(self, model: str) -> None:
        if not self.logged:
            self.logged = True
            log.warning(self.note(model))
