"""The ``__main__`` of every process reasoner spawns (see :mod:`reasoner.procs`): it runs
nothing of the caller's script and ends the process when its parent is gone.

multiprocessing runs this module under the name ``__mp_main__`` before the child unpickles
its target; imported under any other name (a doc or test tool walking the package) it does
nothing.
"""

from __future__ import annotations

if __name__ == "__mp_main__":
    from reasoner.procs import watch_parent

    watch_parent()
