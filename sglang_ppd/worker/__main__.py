"""``python -m sglang_ppd.worker <sglang.launch_server args> [--ppd-... options]``."""

from __future__ import annotations

import sys

from sglang_ppd.worker import options, versions


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts, sglang_args = options.parse(args)
    try:
        installed = versions.installed_sglang_version()
        found = versions.check_installed(installed, versions.installed_sglang_root())
    except versions.UnsupportedSglangVersion as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Before sglang (and torch) is imported: what a CPU-only check can show.
    print(f"sglang_ppd.worker: sglang {found} satisfies the adapter contract; launching", file=sys.stderr)
    from sglang_ppd.worker import sglang_ext

    sglang_ext.launch(opts, sglang_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
