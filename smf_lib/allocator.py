"""CPU allocator tuning: let a training process reuse freed memory instead of page-faulting it in again."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def tune_cpu_allocator(keep_below: int = 2**30) -> bool:
    """Let this process reuse freed CPU memory instead of handing large blocks back to the OS (glibc only).

    glibc serves every allocation above its mmap threshold (at most 32 MiB unless set) with a fresh ``mmap`` and
    unmaps it on free, so each training step page-faults its large activations (SmolLM2's 8 x 128-token logits alone
    are 200 MB) in again from zero: about 200,000 page faults per step in the benchmark. On a 2-core virtual machine
    that cost grew with the memory the process holds, so a 1M-slot value table (2.4 GB) made the *base model's*
    forward and backward about 30% slower although the table itself is read sparsely; an unused 2.4 GB tensor did
    the same. This sets ``M_MMAP_THRESHOLD`` to ``keep_below`` bytes and ``M_TRIM_THRESHOLD`` to 2 GiB through
    ``mallopt``, so freed blocks are reused and the faults disappear (benchmarks/results, chapter 6). The price: the
    process keeps up to its peak working set (peak RSS about 15% higher in the benchmark). Same idea as
    ``LD_PRELOAD`` of jemalloc/tcmalloc in PyTorch's CPU tuning guide, without a new dependency.

    Process-wide and irreversible; smf_lib never calls it on import. The runner CLI and the benchmark call it
    (``python -m smf_lib run --no-tune-allocator`` opts out). GPU memory is not affected.

    Returns:
        ``True`` when set, ``False`` where the C library is not glibc (macOS, musl, Windows), which is left
        unchanged.
    """
    if not 0 <= int(keep_below) < 2**31:
        raise ValueError(f"keep_below must be a byte count in 0..2**31-1 (mallopt takes an int), got {keep_below}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, int(keep_below))
                and mallopt(m_trim_threshold, 2**31 - 1))
