"""Prompt rendering: sandboxed Jinja templates, untrusted-text escaping, history budget.

Templates live in ``prompts/*.j2`` (or a user folder given as ``template_dir``; files there
override the built-in ones of the same name). They are rendered with a
:class:`~jinja2.sandbox.SandboxedEnvironment` and :class:`~jinja2.StrictUndefined`, so a
template cannot reach Python internals and a missing variable is an error.

Item text is *data*, never instructions: before it reaches a template every string is
whitespace-normalised, stripped of control characters, length-capped, and JSON-quoted
with angle brackets escaped, so it cannot close the ``<history>``/``<candidates>``
delimiters or pass for part of the prompt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, ValidationError

from .backends.base import Backend
from .configurable import ComponentConfig
from .errors import InvalidRequestError, from_validation_error
from .protocol import HistoryEntry, Item, RankRequest

PACKAGE_DIR = Path(__file__).resolve().parent
SPLIT_MARKER = "\x00<<SPLIT>>\x00"


def builtin_template_dir() -> Path:
    """``prompts/`` at the repository root (editable install) or inside the wheel."""
    for candidate in (PACKAGE_DIR.parent / "prompts", PACKAGE_DIR / "_prompts"):
        if (candidate / "system.j2").is_file():
            return candidate
    raise FileNotFoundError("built-in prompt templates not found (expected prompts/*.j2)")


@functools.lru_cache(maxsize=8)
def template_environment(template_dir: str | None = None) -> SandboxedEnvironment:
    """THE environment every template renders in (prompts and reason sentences alike): sandboxed, with
    ``StrictUndefined``; files in ``template_dir`` override the built-in ones of the same name."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(template_dir)] if template_dir else []
    loaders.append(jinja2.FileSystemLoader(str(builtin_template_dir())))
    return SandboxedEnvironment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                                autoescape=False,  # not HTML: untrusted text is quoted before rendering
                                trim_blocks=True, lstrip_blocks=True)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACE_RE = re.compile(r"\s+")


def quote_untrusted(text: str, max_chars: int) -> tuple[str, bool]:
    """Normalise, cap and quote untrusted text. Returns ``(quoted, was_truncated)``."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    truncated = len(text) > max_chars
    if truncated:
        text = text[: max_chars - 1].rstrip() + "…"
    quoted = json.dumps(text, ensure_ascii=False)
    return quoted.replace("<", "\\u003c").replace(">", "\\u003e"), truncated


@dataclass
class ItemView:
    """What a template sees of an item: every string already quoted."""

    id: str
    title: str
    description: str | None = None
    attributes: str | None = None
    rating: str | None = None
    label: str | None = None
    truncated: int = 0  # how many of this item's texts were cut to the prompt limits


@dataclass
class RenderedPrompt:
    text: str
    history_used: int
    notes: list[str] = field(default_factory=list)


class PromptConfig(ComponentConfig):
    """The prompt renderer's knobs: templates and the prompt budget (``Settings.prompt``)."""

    template_dir: Path | None = Field(default=None, description="folder with your own *.j2 templates")
    max_history: int = Field(default=50, ge=0, description="most recent history items considered")
    max_prompt_tokens: int | None = Field(default=None, description="default: the model's context length minus output reserve")
    output_reserve_tokens: int = Field(default=256, ge=1)
    max_title_chars: int = Field(default=160, ge=8, description="longer titles are truncated in prompts (noted)")
    max_description_chars: int = Field(default=300, ge=0)


class PromptRenderer:
    """Turns protocol objects into chat prompts for a backend, within its token budget."""

    def __init__(self, backend: Backend, config: PromptConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.backend = backend
        if not isinstance(config, PromptConfig) or kwargs:
            try:
                config = PromptConfig.model_validate({**(dict(config) if config else {}), **kwargs})
            except ValidationError as exc:
                raise from_validation_error(exc, prefix="prompt") from None
        self.config: PromptConfig = config
        if config.template_dir is not None and not Path(config.template_dir).is_dir():
            raise InvalidRequestError(f"template folder {config.template_dir} does not exist", param="template_dir")
        self.env = template_environment(str(config.template_dir) if config.template_dir is not None else None)

    # ---- views ------------------------------------------------------------------
    def item_view(self, item: Item, label: str | None = None) -> ItemView:
        s = self.config
        cut = 0

        def quote(text: str, max_chars: int) -> str:
            nonlocal cut
            quoted, truncated = quote_untrusted(text, max_chars)
            cut += truncated
            return quoted

        attrs = None
        if item.attributes:
            flat = "; ".join(
                f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in item.attributes.items()
            )
            attrs = quote(flat, s.max_description_chars)
        desc = None
        if item.description and s.max_description_chars > 0:
            desc = quote(item.description, s.max_description_chars)
        rating = None
        if isinstance(item, HistoryEntry) and item.rating is not None:
            rating = f"{item.rating:g}"
        return ItemView(
            id=quote(item.id, 256),
            title=quote(item.title, s.max_title_chars),
            description=desc,
            attributes=attrs,
            rating=rating,
            label=label,
            truncated=cut,
        )

    @staticmethod
    def chronological(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
        """Oldest first: sorted by timestamp when every entry has a numeric one, else as given."""
        entries = list(history)
        if entries and all(isinstance(h.timestamp, (int, float)) for h in entries):
            entries.sort(key=lambda h: h.timestamp)  # type: ignore[arg-type, return-value]
        return entries

    def history_views(self, history: Sequence[HistoryEntry]) -> list[ItemView]:
        """Chronological (oldest first), capped at ``max_history`` most recent items."""
        entries = self.chronological(history)
        if self.config.max_history == 0:
            return []
        return [self.item_view(h) for h in entries[-self.config.max_history :]]

    def truncated_texts(self, request: RankRequest) -> int:
        """Texts of this request (candidates, history the prompts may show) cut to the limits.

        Counted per request from the request itself, not from a counter shared by a batch,
        threads or the several prompts (permutations, retries, reasons) one request renders.
        """
        views = [self.item_view(c) for c in request.candidates] + self.history_views(request.history)
        return sum(v.truncated for v in views)

    def template_hash(self) -> str:
        """Hash of every template this renderer would use (your folder's, else the built-in ones)."""
        digest = hashlib.sha256()
        for name in sorted(self.env.list_templates(extensions=["j2"])):
            source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
            digest.update(f"{name}\x00{source}\x00".encode())
        return digest.hexdigest()[:16]

    # ---- rendering --------------------------------------------------------------
    def render(self, template: str, **context: Any) -> str:
        try:
            return self.env.get_template(template).render(**context)
        except jinja2.TemplateNotFound as exc:
            raise InvalidRequestError(f"prompt template {exc.name!r} not found", param="template_dir") from None
        except jinja2.UndefinedError as exc:
            raise InvalidRequestError(f"prompt template {template!r}: {exc.message}", param="template_dir") from None

    def messages(self, template: str, **context: Any) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.render("system.j2", **context).strip()},
            {"role": "user", "content": self.render(template, **context).strip()},
        ]

    def chat(self, template: str, **context: Any) -> str:
        return self.backend.chat_prompt(self.messages(template, **context))

    @property
    def budget(self) -> int:
        s = self.config
        if s.max_prompt_tokens is not None:
            return s.max_prompt_tokens
        return max(64, self.backend.context_length - s.output_reserve_tokens)

    def fit(
        self,
        template: str,
        history: list[ItemView],
        extra_tokens: int = 0,
        **context: Any,
    ) -> RenderedPrompt:
        """Render with as much recent history as fits the token budget.

        ``extra_tokens`` reserves room for text appended later (e.g. pointwise suffixes).
        Tries the full history first (the common case), then binary-searches the count.
        """
        budget = self.budget - extra_tokens

        def render_n(n: int) -> str:
            return self.chat(template, history=history[len(history) - n :] if n else [], **context)

        def fits(text: str) -> bool:
            return self.backend.count_tokens(text.replace(SPLIT_MARKER, "")) <= budget

        full = render_n(len(history))
        if fits(full):
            return RenderedPrompt(full, len(history))
        empty = render_n(0)
        if not fits(empty):
            raise InvalidRequestError(
                f"the candidates alone need more than the prompt budget of {self.budget} tokens; "
                "send fewer or shorter candidates",
                param="candidates",
            )
        lo, hi, best = 0, len(history) - 1, empty
        while lo < hi:  # invariant: n=lo fits, n=hi+1 does not
            mid = (lo + hi + 1) // 2
            text = render_n(mid)
            if fits(text):
                lo, best = mid, text
            else:
                hi = mid - 1
        note = f"history truncated to the {lo} most recent of {len(history)} items to fit {budget} prompt tokens"
        return RenderedPrompt(best, lo, [note])
