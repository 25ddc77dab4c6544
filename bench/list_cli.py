"""``python -m bench list``: which runtimes can run here and why not; ``--options``: what each runtime offers, as its
class declares it (precisions, devices, capabilities) and its own ``--option KEY=VALUE`` settings with their type,
default and meaning.

    python -m bench list [NAMES...] [--json] [--all]
    python -m bench list --options [NAMES...] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
import warnings

from bench.cell import EXIT_OK, EXIT_USAGE
from bench.cli_common import fail, setup_logging
from runtimes import (
    canonical_name,
    capabilities,
    describe_options,
    list_runtimes,
    option_help,
    probe,
    runtime_aliases,
)
from runtimes.base import RuntimeUnavailable

WIDTH = 100
# capability -> how the --options header says it
CAN = {"throughput": "throughput scenario", "profile": "--profile", "explain": "explain",
       "int8_from_export": "int8 model from the export stage", "runs_paddle_model": "runs the Paddle model"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench list", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="include test runtimes (null)")
    p.add_argument("--options", action="store_true",
                   help="each runtime's capabilities and its own options (name, type, default, meaning); no probing")
    p.add_argument("names", nargs="*", help="only these runtimes")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(False)
    names = args.names or list_runtimes(include_test=args.all or args.json)
    if args.options:
        try:
            described = [(canonical_name(n), capabilities(n), option_help(n)) for n in names]
        except (ValueError, RuntimeUnavailable) as exc:
            return fail(str(exc), EXIT_USAGE)
        if args.json:
            print(json.dumps([{"name": n, "capabilities": c, "options": o} for n, c, o in described], default=str))
        else:
            for name, caps, options in described:
                print("\n".join(option_lines(name, caps, options)))
        return EXIT_OK
    with warnings.catch_warnings():  # probing imports the runtimes; their import-time warnings are noise here
        warnings.simplefilter("ignore")
        found = [probe(name) for name in names]
    if args.json:
        print(json.dumps([dataclasses.asdict(a) for a in found]))
        return EXIT_OK
    width = max(len(a.name) for a in found)
    aliases = runtime_aliases()
    for a in found:
        state = "available  " if a.available else "unavailable"
        print(f"{a.name.ljust(width)}  {state}  {a.detail if a.available else a.reason}".rstrip())
        extra = list(a.notes)
        if aliases.get(a.name):
            extra.append(f"aliases: {', '.join(aliases[a.name])}")
        options = describe_options(a.name)
        if options:
            extra.append(f"options: {options}")
        for line in extra:
            print(f"{''.ljust(width)}  {''.ljust(11)}  {line}")
    return EXIT_OK


def option_lines(name: str, caps: dict, options: list[dict]) -> list[str]:
    """One runtime: what its class offers, then each option (name, type, default) with its meaning below."""
    can = [CAN[key] for key in CAN if caps.get(key)]
    header = (f"{name}: precisions {', '.join(caps['precisions'])}; devices {', '.join(caps['devices'])}; "
              f"loads {', '.join(caps['formats'])}" + (f"; {', '.join(can)}" if can else ""))
    lines = textwrap.wrap(header, WIDTH, subsequent_indent="    ")
    if not options:
        return [*lines, "  no options of its own", ""]
    for o in options:
        lines.append(f"  --option {o['name']}=...  ({o['type']}; default {o['default']!r})")
        lines += textwrap.wrap(o["help"], WIDTH, initial_indent="      ", subsequent_indent="      ")
    return [*lines, ""]
