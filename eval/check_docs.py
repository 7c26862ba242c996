"""Check the documentation: relative links resolve, and text moved out of the README was kept.

    python eval/check_docs.py links                 # every relative link in README.md and docs/*.md
    python eval/check_docs.py moved --old REV       # figures, commands and lines of REV's README.md
                                                    # still present in README.md + docs/*.md

Exit status 1 when a link is broken, or a figure or a command of the old README is missing.
Lines are reported for reading only: a line may be reflowed or edited on purpose.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a number, with the unit written after it when there is one
FIGURE = re.compile(
    r"(?<![\w.@/-])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?"
    r"(?:\s?(?:%|x|ms|s|min|minutes|MB|GB|GiB|MiB|KB|GFLOP/s|GFLOP|nat|req/s|users/s|tokens))?(?![\w/])"
)
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:llm-rec|python|make|pip|curl|ray|vllm|cat)\b")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def squash(text: str) -> str:
    return " ".join(text.split())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def check_links() -> int:
    broken = []
    count = 0
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            count += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path) if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    print(f"{count} relative links in {len(pages())} pages, {len(broken)} broken")
    for line in broken:
        print("  broken:", line)
    return 1 if broken else 0


def commands(text: str) -> list[str]:
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        found += [line.strip() for line in block.splitlines() if line.strip()]
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        if COMMAND.match(span):
            found.append(span)
    return found


def check_moved(old_rev: str) -> int:
    old = subprocess.run(
        ["git", "show", f"{old_rev}:README.md"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    new = squash("\n".join(p.read_text(encoding="utf-8") for p in pages()))
    figures = sorted({squash(m.group(0)) for m in FIGURE.finditer(old)})
    missing_figures = [f for f in figures if f not in new]
    cmds = list(dict.fromkeys(commands(old)))
    missing_cmds = [c for c in cmds if squash(c) not in new]
    lines = [line.strip() for line in old.splitlines() if line.strip()]
    missing_lines = [line for line in dict.fromkeys(lines) if squash(line) not in new]
    print(f"figures: {len(figures)} distinct in the old README, {len(missing_figures)} missing")
    for f in missing_figures:
        print("  missing figure:", f)
    print(f"commands and code lines: {len(cmds)}, {len(missing_cmds)} missing")
    for c in missing_cmds:
        print("  missing command:", c)
    print(f"lines: {len(set(lines))} distinct non-empty, {len(missing_lines)} not found verbatim")
    for line in missing_lines:
        print("  line:", line)
    return 1 if missing_figures or missing_cmds else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("links")
    moved = sub.add_parser("moved")
    moved.add_argument("--old", required=True, help="git revision whose README.md is the reference")
    args = parser.parse_args()
    return check_links() if args.what == "links" else check_moved(args.old)


if __name__ == "__main__":
    sys.exit(main())
