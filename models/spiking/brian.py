"""Brian2 set-up: code generation target, compiled-code cache and log files.

Brian2 is imported here and nowhere else at module level, so that the cache folder is set
before anything is compiled. The Cython cache goes to ``<cache>/brian2`` (see
:func:`core.paths.cache_dir`), never to the user's home folder.
"""
from __future__ import annotations

import logging
import os
import warnings

from core.paths import cache_dir

_CONFIGURED = False


def get_brian2():
    """Import Brian2, configure it once for this project, and return the module."""
    global _CONFIGURED
    import brian2 as b2

    if not _CONFIGURED:
        b2.prefs.codegen.target = "cython"
        b2.prefs.codegen.runtime.cython.cache_dir = str(cache_dir("brian2"))
        b2.prefs.codegen.runtime.cython.multiprocess_safe = True
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j2"]  # default '-j' forks dozens of compilers
        b2.prefs.logging.file_log = False
        b2.prefs.logging.std_redirection = False
        b2.prefs.core.default_float_dtype = __import__("numpy").float64
        b2.BrianLogger.suppress_name("resolution_conflict")
        os.environ.setdefault("CC", "gcc")
        logging.getLogger("brian2").setLevel(logging.WARNING)
        # Brian2 checks values written to a float32 variable against 1e50, which overflows the cast
        warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning,
                                module=r"brian2\.groups\.group")
        _CONFIGURED = True
    return b2
