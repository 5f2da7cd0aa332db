"""The process made ready for thousands of connections: its descriptor table and its heap.

Two pauses of the whole event loop that a node would otherwise take while clients arrive in
numbers, each fixed once at start:

- **The descriptor table.** Linux grows a process's table of open files by doubling it when
  a new descriptor does not fit (at 64, 256, 512, 1,024, ... descriptors). In a process with
  more than one thread the growth waits for an RCU grace period before the old table can go:
  8 to 16 ms measured on the benchmark machine, during which the ``accept`` that needed the
  room, and so the event loop, stands still. A node taking 1,000 connections took three such
  pauses, in the middle of its clients' handshakes. :func:`reserve_descriptors` grows the
  table once, to the size the descriptor limit allows (capped), before any thread starts,
  when growing is a copy of a few kilobytes.
- **The heap.** :func:`settle_heap` takes the startup heap out of the cyclic collector's
  sight and collects young objects less often (see there).
"""

from __future__ import annotations

import fcntl
import gc
import os
import resource

# The largest table reserved up front: 65,536 descriptors take 512 KB of kernel memory
# (pointers and bitmaps). A limit above it (containers often allow 1,048,576) still works;
# the table grows past the cap as it would have, pausing once per doubling.
DESCRIPTOR_TABLE_CAP = 65_536


def descriptor_limit() -> int:
    """The soft limit on open descriptors (``ulimit -n``), ``DESCRIPTOR_TABLE_CAP`` when
    unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return DESCRIPTOR_TABLE_CAP if soft == resource.RLIM_INFINITY else int(soft)


def reserve_descriptors(cap: int = DESCRIPTOR_TABLE_CAP) -> int:
    """Grow the descriptor table to hold ``min(descriptor_limit(), cap)`` descriptors and
    return that size, or 0 when there is nothing to grow (a limit of 0) or the kernel refused.

    Opens the highest descriptor of that size (a duplicate of one on ``/dev/null``) and
    closes it at once; the table keeps its size. A descriptor already open there is left
    alone: the table is that large already. Call it before threads start (see the module).
    """
    size = min(descriptor_limit(), cap)
    if size <= 0:
        return 0
    highest = size - 1
    try:
        fcntl.fcntl(highest, fcntl.F_GETFD)
    except OSError:
        pass  # not open: ours to take for a moment
    else:
        return size
    source = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if source != highest:
            os.dup2(source, highest, inheritable=False)
            os.close(highest)
    except OSError:
        return 0
    finally:
        os.close(source)
    return size


# Allocations between young collections (CPython's default is 700): a join allocates a few
# hundred objects, so the default runs a collection every few joins during a herd.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once the app has started: move every object alive now (modules, classes, the
    stores' machinery: most of the heap) out of the cyclic collector's sight, and collect
    young objects less often.

    A full collection walks every tracked object: with the startup heap in it, one took
    100 to 200 ms during a connection herd, a pause every client of the node waited
    through. Frozen objects are never freed by the collector (reference counting still
    frees them); what is frozen here lives as long as the process.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
