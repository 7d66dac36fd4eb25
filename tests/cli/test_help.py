"""Every `seam` command's --help shows its help texts as written in the code: no text eaten as
markup (rich took "[classes]" in "{id: [classes]}" for a style tag), nothing dangling."""
from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from seam.cli import app


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), getattr(cmd, "real", cmd)  # a config command, built as when it runs


COMMANDS = list(_commands(get_command(app)))


def _plain(text: str) -> str:
    """Without whitespace: the help formatter re-wraps lines, also after hyphens ("co- occurs")."""
    return re.sub(r"\s+", "", text)


def test_every_command_is_checked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"cam", "serve", "worker", "eval", "rw", "segment", "export", "pipeline", "train seam", "train affinity",
            "train deeplab", "class-prediction", "cvat function-yaml"} <= names


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_the_code_texts(path, cmd):
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    shown = _plain(r.output)
    texts = [p.help for p in cmd.params if getattr(p, "help", None) and not getattr(p, "hidden", False)]
    texts += [para for para in (cmd.help or "").split("\n\n")]
    for text in texts:
        assert _plain(text) in shown, f"{' '.join(path)}: {text!r} is not shown as written"
    # a sentence whose subject vanished ("Epochs ." or "( )"): text lost between words and punctuation
    assert not re.search(r"\w \.(\s|$)|\(\s*\)|\[\s*\]", r.output), r.output
