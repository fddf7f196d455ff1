"""Every command the README shows parses with the current code, so the docs cannot drift:
each console script's arguments go through its real tyro config (nothing runs), and the
scripts and examples it names exist and answer --help."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = (
    ".venv/bin/ttm-",
    "ttm-",
    "python -m ",
    "python examples/",
    "torchrun ",
    "bash scripts/",
)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines = [
        ln.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for ln in block.splitlines()
    ]
    lines += [
        c for c in re.findall(r"`([^`\n]+)`", text) if " " in c
    ]  # inline commands with arguments
    cmds = []
    for ln in lines:
        ln = ln.split("  #")[0].strip()
        if ln.startswith(PREFIXES) and ln not in cmds:
            cmds.append(ln)
    return cmds


def config_for(argv: list[str]):
    """The tyro config class a command's arguments are parsed into, and those arguments."""
    from envs.collect import Args as CollectArgs
    from eval.bench import Command
    from eval.evaluate import EvalConfig
    from eval.memory_plot import Args as MemoryPlotArgs
    from eval.quickstart import QuickstartConfig
    from train.train import TrainConfig
    from ttm_policy.export import Args as ExportArgs

    prog = argv[0].removeprefix(".venv/bin/")
    scripts = {
        "ttm-collect": CollectArgs,
        "ttm-train": TrainConfig,
        "ttm-eval": EvalConfig,
        "ttm-bench": Command,
        "ttm-export": ExportArgs,
    }
    if prog in scripts:
        return scripts[prog], argv[1:]
    if prog == "ttm-convert":  # subcommands
        from envs.lerobot_convert import SUBCOMMANDS

        return SUBCOMMANDS[argv[1]], argv[2:]
    if prog == "torchrun":
        return TrainConfig, argv[argv.index("train.train") + 1 :]
    if prog == "python" and argv[1] == "-m":
        modules = {
            "eval.memory_plot": MemoryPlotArgs,
            "eval.quickstart": QuickstartConfig,
            "train.train": TrainConfig,
            "eval.evaluate": EvalConfig,
            "envs.collect": CollectArgs,
        }
        return modules[argv[2]], argv[3:]
    if prog == "bash" and argv[1] == "scripts/quickstart.sh":
        return QuickstartConfig, argv[2:]
    return None, argv


COMMANDS = readme_commands()


def test_readme_shows_the_main_commands():
    progs = {shlex.split(c)[0].removeprefix(".venv/bin/") for c in COMMANDS}
    assert {"ttm-collect", "ttm-train", "ttm-eval", "ttm-export", "ttm-bench", "bash"} <= progs


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    argv = shlex.split(command)
    cls, args = config_for(argv)
    if cls is not None:
        from train.train import TrainConfig, parse_args

        try:  # SystemExit(2) on an unknown flag or a bad value; ttm-train also takes --preset
            parse_args(args) if cls is TrainConfig else tyro.cli(cls, args=args)
        except SystemExit as e:
            assert e.code == 0, f"{command!r} does not parse"  # 0: the command asked for --help
    elif argv[0] == "bash":
        assert (ROOT / argv[1]).is_file(), argv[1]
    else:  # python examples/...: a plain argparse script
        r = subprocess.run(
            [sys.executable, argv[1], "--help"], cwd=ROOT, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
