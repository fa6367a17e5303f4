"""docs/tutorial.md: the block runner, and every `cereb` line in it parses with today's CLI.

The tutorial itself is executed end to end by `make tutorial` (CI, after the tests); these fast
checks catch a renamed command or flag without training anything.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.cli import build_parser
from scripts.tutorial import build_script, main as tutorial_main, parse_blocks

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"


def test_parse_blocks_marks_run_skip_and_output():
    text = ("intro\n<!-- tutorial: not run (setup) -->\n```bash\nmake install\n```\n"
            "```bash\necho hi\n```\n```text\nhi\n```\n```python\nprint(1)\n```\n")
    blocks = parse_blocks(text)
    assert [(b.lang, b.runs) for b in blocks] == [("bash", False), ("bash", True), ("text", False), ("python", True)]
    assert blocks[0].skip_reason == "setup"
    assert blocks[1].line == 6
    script = build_script(blocks, "t.md", "/usr/bin/python3")
    assert "make install" not in script and "echo hi" in script and "print(1)" in script
    assert script.index("echo hi") < script.index("print(1)")


def test_runner_stops_at_first_failure_and_keeps_shell_state(tmp_path):
    md = tmp_path / "t.md"
    md.write_text("```bash\nX=41\n```\n```python\nimport os\nprint('py', os.getcwd())\n```\n"
                  "```bash\necho $((X + 1)) > answer.txt\nfalse\necho after > after.txt\n```\n")
    work = tmp_path / "work"
    rc = tutorial_main([str(md), "--workdir", str(work)])
    assert rc != 0
    assert (work / "answer.txt").read_text().strip() == "42"
    assert not (work / "after.txt").exists()


def test_runner_refuses_bad_input(tmp_path, capsys):
    assert tutorial_main([str(tmp_path / "missing.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "e.md"
    empty.write_text("no code here\n```text\nout\n```\n")
    assert tutorial_main([str(empty)]) == 2
    assert "no bash or python block" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    ok = tmp_path / "ok.md"
    ok.write_text("```bash\ntrue\n```\n")
    assert tutorial_main([str(ok), "--workdir", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (busy / "x").read_text() == "keep me"


def _cereb_lines(code: str) -> list[str]:
    lines, buf = [], ""
    for raw in code.splitlines():
        line = raw.split(" #")[0].rstrip()
        buf = buf + " " + line.rstrip("\\") if buf else line.rstrip("\\")
        if line.endswith("\\"):
            continue
        if buf.strip().startswith("cereb "):
            lines.append(buf.strip())
        buf = ""
    return lines


def test_tutorial_commands_parse_with_the_cli():
    blocks = [b for b in parse_blocks(TUTORIAL.read_text()) if b.runs]
    assert any(b.lang == "python" for b in blocks)
    commands = [c for b in blocks if b.lang == "bash" for c in _cereb_lines(b.code)]
    used = {shlex.split(c)[1] for c in commands}
    assert {"train", "simulate", "attack"} <= used, used
    parser, _ = build_parser()
    for c in commands:
        argv = [a.replace('"$RUN"', "R").replace('"$ATTACK"', "A") for a in shlex.split(c, posix=False)[1:]]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits on an unknown flag or a bad value
            pytest.fail(f"docs/tutorial.md: {c!r} no longer parses (exit {exc.code})")


def test_tutorial_list_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "scripts.tutorial", str(TUTORIAL), "--list"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "runs" in out and "skipped" in out
