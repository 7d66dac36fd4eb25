"""The CLI's options come from the config dataclasses: a field declared with `setting(...)` is an
option with the field's help and default, recipe fields are None unless given, off switches and
comma lists reach the config as values; every option name the hand-written CLI had still works;
`seam --help` builds no config command (imports no torch)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from seam.cli import app
from seam.cli._app import DeferredCommand, config_command, new_app
from seam.common.options import cli_of, parse_floats, setting


@dataclass(frozen=True)
class Inner:
    alpha: float = setting(6.0, help="Inner power.")


@dataclass
class Toy:
    data: str = setting(path=True, help="Toy data root.")
    epochs: int = setting(8, recipe=True, aliases=("--num-epochs",), help="Toy epochs (recipe: 8).")
    scales: tuple[float, ...] = setting((0.5, 1.0), parse=parse_floats, help="Toy scales.")
    er: bool = setting(True, flag=None, off="--no-er", help="Toy: no ER.")
    amp: bool | None = setting(None, recipe=True, help="Toy mixed precision.")
    inner: Inner = field(default_factory=Inner)
    internal: str = "library only"  # no setting(): not an option


def _toy_app(config: type) -> tuple[typer.Typer, list]:
    """An app with one command over `config` (under a group: typer runs a lone root command as the
    app itself); the command records what it was given."""
    seen: list = []
    root, toy = new_app(), new_app()
    root.add_typer(toy, name="toy")

    @config_command(toy, "toy", lambda: config)
    def run(given: dict, extra: int = 3) -> None:
        """Toy command."""
        seen.append((given, extra))

    return root, seen


def _invoke(config: type, *args: str):
    root, seen = _toy_app(config)
    r = CliRunner().invoke(root, ["toy", "toy", *args], terminal_width=200)
    return r, seen


def test_fields_become_options_with_their_help_and_default():
    r, _ = _invoke(Toy, "--help")
    assert r.exit_code == 0, r.output
    for text in ("--data", "Toy data root.", "[required]", "--epochs", "Toy epochs (recipe: 8).", "--scales",
                 "[default: 0.5,1.0]", "--no-er", "Toy: no ER.", "--amp / --no-amp", "--alpha", "Inner power.",
                 "[default: 6.0]", "--extra"):
        assert text in r.output, text
    assert "--internal" not in r.output


def test_a_new_field_is_a_new_option():
    @dataclass
    class Toy2(Toy):
        crop: int = setting(448, help="Square crop, a new setting.")

    assert "--crop" not in _invoke(Toy, "--help")[0].output
    r, seen = _invoke(Toy2, "--help")
    assert "--crop" in r.output and "Square crop, a new setting." in r.output and "[default: 448]" in r.output
    r, seen = _invoke(Toy2, "--data", "d", "--crop", "64")
    assert r.exit_code == 0, r.output
    assert seen[0][0]["crop"] == 64


def test_values_reach_the_command_as_config_fields(tmp_path):
    r, seen = _invoke(Toy, "--data", str(tmp_path))
    assert r.exit_code == 0, r.output
    given, extra = seen[0]
    # recipe fields absent = None (the recipe decides); paths as the config's str; a nested config rebuilt
    assert given == {"data": str(tmp_path), "epochs": None, "scales": (0.5, 1.0), "er": True, "amp": None,
                     "inner": Inner(6.0)}
    assert extra == 3
    r, seen = _invoke(Toy, "--data", "d", "--epochs", "2", "--scales", "1,2", "--no-er", "--no-amp", "--alpha", "2",
                      "--extra", "5")
    assert r.exit_code == 0, r.output
    assert seen[0] == ({"data": "d", "epochs": 2, "scales": (1.0, 2.0), "er": False, "amp": False,
                        "inner": Inner(2.0)}, 5)
    Toy(**seen[0][0])  # what the command is given builds the config
    r, seen = _invoke(Toy, "--data", "d", "--num-epochs", "4")
    assert r.exit_code == 0 and seen[0][0]["epochs"] == 4, r.output  # an alias is the same option


def test_bad_text_is_a_usage_error():
    r, seen = _invoke(Toy, "--data", "d", "--scales", "a,b")
    assert r.exit_code == 2 and not seen
    assert "--scales" in r.output and "expected comma-separated numbers" in r.output


# Every option name of the hand-written CLI before it was generated (the docs use them).
OLD_OPTIONS = {
    "train seam": "--amp --authors-momentum --backbone --batch-size --bn-calibration --classes --crop --data --dataset "
                  "--deterministic --device --epochs --eval-list --eval-scales --jitter --labels --log-every --lr "
                  "--max-minutes --momentum --no-amp --no-deterministic --no-er --no-eval --no-jitter --no-ohem "
                  "--no-pcm --out --recipe --resize-range --resume --save-cams --seed --siamese-scale --stop-after "
                  "--threads --train-list --transform --weight-decay --weights --workers",
    "train affinity": "--amp --authors-momentum --backbone --batch-size --cams --crop --data --dataset "
                      "--deterministic --device --epochs --ha-alpha --image-labels --la-alpha --labels --log-every "
                      "--lr --max-minutes --momentum --no-amp --no-crf --no-deterministic --no-flip --no-jitter --out "
                      "--radius --recipe --resume --seed --stop-after --train-list --weight-decay --weights --workers",
    "train deeplab": "--amp --backbone --batch-size --bn-group --classes --crop --deterministic --device --epochs "
                     "--image-root --images --iterations --jitter --labels --log-every --lr --max-minutes --momentum "
                     "--no-amp --no-deterministic --out --recipe --resume --scale-range --seed --stop-after "
                     "--weight-decay --weights --workers",
    "pipeline": "--aff-epochs --alpha --amp --backbone --batch-size --beta --cam-scales --crop --data --dataset "
                "--deeplab-epochs --device --eval-list --labels --logt --no-amp --no-crf --no-seg-crf --out --recipe "
                "--seam-epochs --seed --seg-crf --seg-scales --train-list --weights --workers",
    "rw": "--affinity --alpha --beta --cams --dense --device --image-root --images --logt --out --overwrite --radius",
}


def _command(path: str):
    cmd = get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    return cmd


@pytest.mark.parametrize("path", list(OLD_OPTIONS))
def test_config_commands_keep_every_option_and_take_the_configs_help(path):
    cmd = _command(path)
    assert isinstance(cmd, DeferredCommand), "a config command is built on first use"
    real = cmd.real
    names = {o for p in real.params for o in (*p.opts, *p.secondary_opts)}
    assert set(OLD_OPTIONS[path].split()) <= names
    helps = {p.help for p in real.params}
    config = _config_of(real)
    fields = [f for f in _all_fields(config) if cli_of(f) is not None]
    assert fields, path
    for f in fields:
        meta = cli_of(f)
        assert meta.help in helps, f"{path}: {f.name}'s help is not an option's"
        if meta.off_help:
            assert meta.off_help in helps


def _all_fields(config: type) -> list[dataclasses.Field]:
    out = []
    for f in dataclasses.fields(config):
        factory = f.default_factory
        nested = isinstance(factory, type) and dataclasses.is_dataclass(factory)
        out += _all_fields(factory) if nested and cli_of(f) is None else [f]
    return out


def _config_of(real) -> type:
    """The config behind a built command: the `config()` its registration imported."""
    from seam.cli import class_prediction, pipeline, rw, train, train_affinity, train_deeplab

    by_name = {"seam": train, "affinity": train_affinity, "deeplab": train_deeplab, "pipeline": pipeline, "rw": rw,
               "class-prediction": class_prediction}
    return by_name[real.name]._config()


def test_recipe_options_show_no_default_and_required_fields_are_required():
    real = _command("train seam").real
    by_name = {p.name: p for p in real.params}
    assert all(by_name[n].default is None for n in ("batch_size", "epochs", "lr", "momentum", "crop", "amp",
                                                    "recipe", "siamese_scale", "jitter"))
    assert by_name["data"].required and not by_name["dataset"].required
    assert by_name["stop_after"].hidden


def test_top_level_help_builds_no_config_command():
    code = ("import sys; from typer.testing import CliRunner; from seam.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'pipeline' in r.output and 'class-prediction' in r.output; "
            "heavy = [m for m in ('torch', 'seam.training.trainers.seam', 'seam.training.pipeline') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
