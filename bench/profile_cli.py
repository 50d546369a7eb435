"""`itops …` under cProfile, every thread of it (cProfile alone sees only the main thread, and a
desk look-up runs in a thread of its own): one pstats file with all threads' calls merged.

    python bench/profile_cli.py OUT.prof [--wall] -- --workspace WS fix … --ticket RT-1
    python -c "import pstats; pstats.Stats('OUT.prof').sort_stats('tottime').print_stats(40)"

Each thread is timed by its own CPU clock (time.thread_time), so a thread waiting for the desk
or for a lock costs nothing and the sums are CPU; `--wall` times by the wall clock instead
(cProfile's default: waits show). The profile is written at exit (after the command's own exit
handlers ran).
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    clock = time.thread_time
    if rest[:1] == ["--wall"]:
        clock, rest = time.perf_counter, rest[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    profiles: list[cProfile.Profile] = []
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        profile = cProfile.Profile(clock)
        profiles.append(profile)
        profile.enable()
        try:
            run(self)
        finally:
            profile.disable()

    threading.Thread.run = profiled  # type: ignore[method-assign]
    main_profile = cProfile.Profile(clock)
    profiles.append(main_profile)

    def dump() -> None:
        main_profile.disable()
        stats = pstats.Stats(main_profile)
        for profile in profiles[1:]:
            try:
                stats.add(profile)
            except TypeError:  # a thread that never ran a call
                continue
        stats.dump_stats(out)

    atexit.register(dump)  # (after the command's own handlers: registered first, runs last)
    sys.argv = ["itops", *rest]
    main_profile.enable()
    from toolkit.cli import main as itops

    itops(rest)


if __name__ == "__main__":
    main()
