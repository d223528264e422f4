"""Command-line conventions shared by every tool: bad input is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any, Callable, Mapping, Sequence

import yaml

from workbench.fields import FieldError, coerce, describe, field_types

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad input from the user: a command line prints it as one line (`fail`) and exits with EXIT_BAD_INPUT."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: str) -> int:
    """Print `prog: error: message` as one line on stderr; return the bad-input exit code."""
    first = " ".join(str(message).split())
    print(f"{prog}: error: {first}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                plan: Callable[[argparse.Namespace, list[str]], Any], run: Callable[[Any], int]) -> int:
    """The main of a command: `argv` (None: sys.argv[1:]) with `-c FILE` expanded and parsed, logging on stderr,
    then `plan(args, argv)` checks the request and `run(planned)` carries it out, returning the exit code.

    A bad config file, or a ValueError that `plan` raises (UsageError and the other one-line errors), is one line on
    stderr and EXIT_BAD_INPUT, with nothing run; argparse's own refusals exit 2 (SystemExit) as usual.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = expand_config(parser, argv)
    except ValueError as exc:
        return fail(parser.prog, str(exc))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    try:
        planned = plan(args, argv)
    except ValueError as exc:
        return fail(parser.prog, str(exc))
    return run(planned)


def add_dataclass_flags(group, cls: type, skip: tuple[str, ...] = (),
                        help_for: Mapping[str, str] | None = None) -> list[str]:
    """One `--field-name` flag per field of dataclass `cls` (minus `skip`), typed by the field's annotation.

    Help text and short aliases come from each field's `metadata` ("help", "flags"), unless `help_for` gives a
    command's own text for a field (what the field means there); bools become `--x/--no-x`; values are parsed
    by `workbench.fields` (the one typed parser), so `--clip-grad none` and `--opt-betas 0.9,0.99` work.
    Returns the field names added (the `dest` of each flag).
    """
    def parser_for(name: str):
        def parse(text: str):
            try:
                return coerce(cls, name, text)
            except FieldError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
        parse.__name__ = describe(field_types(cls)[name])
        return parse

    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flags = [*f.metadata.get("flags", ()), "--" + f.name.replace("_", "-")]
        kwargs = dict(dest=f.name, default=f.default, help=(help_for or {}).get(f.name, f.metadata.get("help", "")))
        if field_types(cls)[f.name] is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(*flags, type=parser_for(f.name), metavar=f.name.upper(), **kwargs)
        added.append(f.name)
    return added


def dataclass_from_args(cls: type, args: argparse.Namespace, **changes):
    """An instance of dataclass `cls` from the flags `add_dataclass_flags` declared for it, with `changes` applied."""
    return cls(**{**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}, **changes})


def add_model_flags(group, presets: Sequence[str], default: str, example: str) -> None:
    """--model PRESET, --model-kwargs FIELD=VALUE... and --drop-path: the base model of a training command (the
    model package's presets are passed in: this module knows no model). `example`: --model-kwargs in use."""
    group.add_argument("--model", default=default, help=f"preset: {', '.join(presets)}")
    group.add_argument("--model-kwargs", nargs="*", default=[], metavar="FIELD=VALUE",
                       help=f"any other field of the model's config, typed by the field: {example}")
    group.add_argument("--drop-path", type=float, help="stochastic depth rate (drop_path_rate)")


def add_tracking_flags(group, default_experiment: str) -> None:
    """--tracking-uri and --experiment: where a command's MLflow runs go."""
    group.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<output>/mlflow.db)")
    group.add_argument("--experiment", default=default_experiment, help="MLflow experiment name")


def given_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The `dest`s the user set on the command line `argv` (not left at their defaults)."""
    unset = object()
    probe = argparse.Namespace(**{action.dest: unset for action in parser._actions if action.dest != "help"})
    parsed = parser.parse_args(argv, namespace=probe)
    return {name for name, value in vars(parsed).items() if value is not unset}


# ---------------------------------------------------------------------------------- -c/--config FILE
CONFIG_FLAGS = ("-c", "--config")


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*CONFIG_FLAGS, metavar="FILE", dest="config",
                        help="YAML of defaults (as timm's train.py -c): keys are this command's long flags "
                             "(dashes or underscores), e.g. `epochs: 5`, `no_gsa: true`, `opt_betas: [0.9, 0.99]`, "
                             "`model_kwargs: {gsa: false}`; flags given on the command line win")


def expand_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """argv with `-c FILE` replaced by the flags the YAML file sets, placed first so the command line wins.

    The file's values go through the same parser (and the same typed field parser) as typed flags, so a config
    file cannot set what the command line could not. Raises ValueError (one line) for an unreadable file, a key
    that is not a flag, or a value of the wrong shape.
    """
    for i, token in enumerate(argv):
        if token in CONFIG_FLAGS or token.startswith("--config="):
            if "=" in token:
                path, rest = token.split("=", 1)[1], argv[:i] + argv[i + 1:]
            elif i + 1 < len(argv):
                path, rest = argv[i + 1], argv[:i] + argv[i + 2:]
            else:
                raise ValueError(f"{token} needs a YAML file")
            return config_argv(parser, path) + rest
    return argv


def config_argv(parser: argparse.ArgumentParser, path: str) -> list[str]:
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ValueError(f"config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of flag: value, got {type(data).__name__}")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    out: list[str] = []
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ValueError(f"config file {path}: {key!r} is not a flag of {parser.prog}; see --help for the names")
        action = actions[dest]
        flag = next(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise ValueError(f"config file {path}: {key} must be true or false, got {value!r}")
            out.append(flag if value else "--no-" + flag[2:])
        elif action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise ValueError(f"config file {path}: {key} must be true or false, got {value!r}")
            out += [flag] if value else []
        elif isinstance(value, dict):  # model_kwargs: {field: value}
            out += [flag, *(f"{k}={cli_text(v)}" for k, v in value.items())]
        elif action.nargs in ("*", "+"):
            out += [flag, *(cli_text(v) for v in (value if isinstance(value, list) else [value]))]
        else:
            out += [flag, cli_text(value)]
    return out


def cli_text(value) -> str:
    """A value as the command line would spell it, and its typed field parsers read it back (lists as a,b,c;
    null as none; bools as true/false)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(cli_text(v) for v in value)
    return str(value)
