"""``python -m bench``: see :mod:`bench.cli`."""

import sys

from core.proc import Terminated, exit_code_of, interrupt_on_sigterm

interrupt_on_sigterm()  # first: a SIGTERM while the modules below load is handled like one during the run
try:
    from bench.cli import main
except KeyboardInterrupt as exc:
    print(f"error: {exc if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
    sys.exit(exit_code_of(exc))

sys.exit(main())
