"""Command-line conventions shared by every tool: bad input is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: str) -> int:
    """Print `prog: error: message` as one line on stderr; return the bad-input exit code."""
    first = " ".join(str(message).split())
    print(f"{prog}: error: {first}", file=sys.stderr)
    return EXIT_BAD_INPUT


def add_dataclass_flags(group, cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    """One `--field-name` flag per field of dataclass `cls` (minus `skip`), typed by the field's annotation.

    Help text and short aliases come from each field's `metadata` ("help", "flags"); bools become
    `--x/--no-x`; values are parsed by `workbench.fields` (the one typed parser), so `--clip-grad none` and
    `--opt-betas 0.9,0.99` work. Returns the field names added (the `dest` of each flag).
    """
    import dataclasses

    from workbench.fields import FieldError, coerce, describe, field_types

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
        kwargs = dict(dest=f.name, default=f.default, help=f.metadata.get("help", ""))
        if field_types(cls)[f.name] is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(*flags, type=parser_for(f.name), metavar=f.name.upper(), **kwargs)
        added.append(f.name)
    return added


def given_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The `dest`s the user set on the command line `argv` (not left at their defaults)."""
    unset = object()
    probe = argparse.Namespace(**{action.dest: unset for action in parser._actions if action.dest != "help"})
    parsed = parser.parse_args(argv, namespace=probe)
    return {name for name, value in vars(parsed).items() if value is not unset}
