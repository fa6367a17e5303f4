"""Run the code blocks of a Markdown tutorial, in order, so that the tutorial cannot rot.

``python -m scripts.tutorial docs/tutorial.md`` (or ``make tutorial``) collects every fenced
``bash`` and ``python`` block, writes them into one bash script (``set -euo pipefail``; python
blocks run through the current interpreter from a here-document, so shell variables set by one
bash block stay set for the next) and runs it in a fresh working directory with the project's
virtual environment first on ``PATH``. A block right after a ``<!-- tutorial: not run ... -->``
comment is skipped and listed (the set-up a fresh clone needs, which CI does itself). Blocks in
any other language (``text`` for example output) are never run.

Exit status: the script's own; the script and its log stay in the working directory.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUN_LANGS = ("bash", "python")
SKIP_MARK = re.compile(r"<!--\s*tutorial:\s*not run\b(.*?)-->", re.S)
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, code, line number in the file and whether it runs."""

    lang: str
    code: str
    line: int
    skip_reason: str | None = None

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and self.skip_reason is None


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, each marked run or skipped."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip()
        skip = None
        mark = list(SKIP_MARK.finditer(before))
        if mark and mark[-1].end() == len(before):
            skip = mark[-1].group(1).strip(" :-\n()") or "marked not run"
        blocks.append(Block(m.group(1).lower(), m.group(2), text.count("\n", 0, m.start()) + 1, skip))
    return blocks


def build_script(blocks: list[Block], source: str, python: str) -> str:
    """One bash script that runs the blocks that run, in order, stopping at the first failure."""
    out = ["#!/usr/bin/env bash", f"# generated from {source} by scripts/tutorial.py", "set -euo pipefail", ""]
    for b in blocks:
        if not b.runs:
            continue
        out.append(f"echo '=== {source}:{b.line} ({b.lang})'")
        if b.lang == "bash":
            out.append(b.code.rstrip("\n"))
        else:
            tag = "TUTORIAL_PY_EOF"
            if tag in b.code:
                raise ValueError(f"{source}:{b.line}: a python block may not contain {tag}")
            out += [f"{python} - <<'{tag}'", b.code.rstrip("\n"), tag]
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.tutorial", description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default="docs/tutorial.md", help="the Markdown file (default docs/tutorial.md)")
    p.add_argument("--workdir", metavar="DIR", help="run here (created; must be empty or absent; default a new "
                                                    "temporary directory)")
    p.add_argument("--list", action="store_true", help="list the blocks and whether they run; run nothing")
    args = p.parse_args(argv)
    src = Path(args.file)
    if not src.is_file():
        print(f"error: tutorial file {src} does not exist", file=sys.stderr)
        return 2
    blocks = parse_blocks(src.read_text())
    if args.list:
        for b in blocks:
            state = "runs" if b.runs else (f"skipped ({b.skip_reason})" if b.skip_reason else "not code")
            print(f"{src}:{b.line:<5} {b.lang or '-':<8} {state}")
        return 0
    if not any(b.runs for b in blocks):
        print(f"error: {src} has no bash or python block to run", file=sys.stderr)
        return 2
    if args.workdir:
        work = Path(args.workdir)
        if work.exists() and any(work.iterdir()):
            print(f"error: --workdir {work} is not empty (the tutorial starts from nothing)", file=sys.stderr)
            return 2
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="cereb-tutorial-"))
    script = work / "tutorial.sh"
    script.write_text(build_script(blocks, str(src), sys.executable))
    for b in blocks:
        if b.skip_reason:
            print(f"skipped {src}:{b.line} ({b.skip_reason})")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    print(f"running {sum(b.runs for b in blocks)} blocks of {src} in {work}", flush=True)
    bash = shutil.which("bash") or "/bin/bash"
    rc = subprocess.call([bash, str(script)], cwd=work, env=env)
    print(f"tutorial {'passed' if rc == 0 else f'FAILED (exit {rc})'}: {src} in {work}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
