"""The ``gtn-nas`` command line: parse arguments, call the library, print, choose the exit code.

One module per command group (``space_cmds``, ``teacher_cmd``, ``search_cmds``, ...), each
with ``register(commands)``; this module assembles the parser and turns errors into exit codes.

Exit codes: 0 success, 2 bad input or an infeasible request (one line on stderr, ``--debug``
shows the traceback), 75 a full disk or a folder another process is writing (the same command
works later; nothing was lost), 1 an unexpected failure, 130 interrupted.

Example:
    $ gtn-nas space show --preset s_nas_m
    $ gtn-nas space sample --seed 3 --out student.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from gtn_nas import __version__
from gtn_nas.errors import GtnNasError, exit_code

COMMAND_MODULES = ("space_cmds", "teacher_cmd", "search_cmds", "distill_cmds", "run_cmd",
                   "list_cmd")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``gtn-nas COMMAND: error: ...``) and exit 2, like every other
    bad input; ``--help`` still prints the full usage."""

    def error(self, message: str):  # type: ignore[override]
        root, _, command = self.prog.partition(" ")
        where = f"{command}: " if command else ""
        self.exit(2, f"{root}: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(
        prog="gtn-nas", description="Generic Teacher Network distillation into NAS-searched "
                                    "hardware-specific students.")
    parser.add_argument("--version", action="version", version=f"gtn-nas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"gtn_nas.cli.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except GtnNasError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"gtn-nas: error: {one_line_message(exc)}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        sys.stderr.write("gtn-nas: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see --debug
        if args.debug:
            raise
        message = str(exc).strip().splitlines()
        sys.stderr.write(f"gtn-nas: unexpected error: {type(exc).__name__}: "
                         f"{message[0] if message else ''} "
                         f"(rerun with --debug for the traceback)\n")
        return 1


def one_line_message(exc: BaseException) -> str:
    """The error's own one line, also when a DataLoader worker raised it (PyTorch re-raises it
    in the main process with the worker's traceback in the message; its last line is the
    original ``module.Class: message``)."""
    text = str(exc).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


if __name__ == "__main__":
    sys.exit(main())
