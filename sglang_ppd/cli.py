"""``sglang-ppd <command> ...``: one front door; each command lives in its own subpackage."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version

# command -> (module with a ``main(argv: list[str]) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("sglang_ppd.sim.cli", "simulate a PD cluster on a trace or workload (and `sim compare`)"),
    "router": ("sglang_ppd.router.cli", "run the sglang_ppd router in front of SGLang P/D workers"),
    "emulate": ("sglang_ppd.emulator.cli", "run one emulated SGLang worker (CPU, cost-model paced)"),
    "worker": ("sglang_ppd.worker.__main__", "run a real SGLang server with the PPD decode extension"),
    "monitor": ("sglang_ppd.monitor.cli", "live terminal dashboard of a running router"),
    "bench": ("sglang_ppd.bench.cli", "replay a workload against any SGLang/OpenAI endpoint"),
    "launch": ("sglang_ppd.launch", "bring up a whole cluster (emulated or real SGLang) with the router"),
}


def usage() -> str:
    lines = ["usage: sglang-ppd <command> [args...]   (or sglang-ppd --version)", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"sglang-ppd {version('sglang-ppd')}")
        return 0
    if args[0] not in COMMANDS:
        print(f"unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    rc: int = module.main(args[1:])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
