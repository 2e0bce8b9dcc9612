"""The one process pool of the project's CPU fan-outs (radiomics ROIs, DVH ROIs, ...).

``run_pool(work, items, ...)`` calls ``work(item)`` for every item, in a pool of spawned worker
processes (never fork: the parent may hold threads, SQLite handles and ITK state), with:

* one BLAS/OpenMP/ITK thread per worker (set before numpy/SimpleITK are imported there), so
  ``workers`` processes use ``workers`` cores and no more;
* an optional per-worker initializer (load the course image once per worker, not per task);
* retries with exponential backoff (``attempts`` tries, ``backoff_s * 2**(n-1)`` between them);
* a per-task timeout;
* adaptive scaling: a ``MemoryError``, a killed worker (OOM killer, segfault) or a timed-out task
  shuts the pool down, halves the workers (at least 1) and resubmits every unfinished item;
* sizing by free memory (:class:`MemoryPolicy`): the pool starts at
  ``min(workers, (available memory - reserve) / peak per worker)``, where ``workers`` is the
  caller's (cores - 1 by default) and the peak is a hint until measured; every finished task
  reports its worker's peak RSS (``VmHWM``, reset before each task), and the pool re-measures:
  fewer tasks in flight when memory gets scarce, and after a halving it grows back towards the
  size before it once at least one worker's peak of memory has freed since. The decision is
  logged as a "Parallelization Configuration" block on ``rtpipeline.<label>`` and returned in
  :attr:`PoolOutcome.config`; later changes in :attr:`PoolOutcome.sizing`;
* longest-first submission when the caller gives each item a cost (the largest ROI does not
  start last and leave the other workers idle at the end).

``sequential=True`` runs the same retries in this process (no timeout), for debugging and for
machines where processes cannot be spawned. Heavy libraries are imported only inside workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rt_resources.pool_memory import (
    Measured,
    MemoryPolicy,
    PoolSizer,
    peak_rss_bytes,
    pool_logger,
    pool_rss_bytes,
    reset_peak_rss,
)

__all__ = [
    "FaultHook",
    "MemoryPolicy",
    "PoolOutcome",
    "RetryPolicy",
    "default_pool_workers",
    "limit_threads",
    "run_pool",
    "terminable_children",
    "workers_from_env",
]

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: ``fault_hook(item, attempt)``: runs in the worker before each call (tests inject faults with it)
FaultHook = Callable[[Any, int], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a task may try."""

    attempts: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 600.0


@dataclass
class PoolOutcome:
    """``results[i]`` = ``work(items[i])`` for the items that succeeded; ``failures[i]`` =
    ``{"error", "attempts"}`` for the others; ``workers`` = the pool size at the end (after any
    halving); ``events`` = what degraded the pool, in order; ``config`` = the sizing decision at the
    start (cores, requested, memory, peak per worker, start); ``sizing`` = later changes of the
    pool size by memory, in order."""

    results: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1
    events: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sizing: list[str] = field(default_factory=list)


@dataclass
class _State:
    attempts: dict[int, int] = field(default_factory=dict)
    ready_at: dict[int, float] = field(default_factory=dict)
    queue: list[int] = field(default_factory=list)
    outcome: PoolOutcome = field(default_factory=PoolOutcome)


#: environment variable overriding the default pool size
WORKERS_ENV = "RT_POOL_WORKERS"


def workers_from_env(variable: str) -> int:
    """``$variable`` if set, else all cores but one (left to the orchestrating process and the OS), at least 1."""
    configured = os.environ.get(variable, "")
    if configured:
        return max(1, int(configured))
    return max(1, (os.cpu_count() or 2) - 1)


def default_pool_workers() -> int:
    """Pool size by default: ``$RT_POOL_WORKERS``, else CPU cores - 1."""
    return workers_from_env(WORKERS_ENV)


def limit_threads() -> None:
    """One thread per process for BLAS, OpenMP and ITK (call before heavy imports)."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        pass
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


#: niceness of batch work (radiomics extraction): under contention the stages that feed the GPU
#: (a course's CT, masks and the model's input) and what a person waits for run first; on an idle
#: machine a niced process runs at full speed
BATCH_NICE = 10


def lower_cpu_priority(increment: int = BATCH_NICE) -> int:
    """Raise this process's niceness to at least ``increment`` (children inherit it; never lowered
    again, so calling it twice costs nothing). Returns the niceness now."""
    current = os.nice(0)
    if current < increment:
        current = os.nice(increment - current)
    return current


def _sigterm_ignored() -> bool:
    """Whether SIGTERM is ignored, as the kernel sees it (a C library may have set that without
    Python's ``signal.getsignal`` knowing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


@contextmanager
def terminable_children() -> Iterator[None]:
    """Children started inside this block can be stopped with SIGTERM.

    An ignored signal is inherited through fork and exec: if this process ignores SIGTERM (some
    launchers and libraries set that), ``multiprocessing.Pool.terminate()`` in a library (nnU-Net's
    export pool) waits forever on workers that ignore it. Only the main thread may change it.
    """
    restore = None
    if threading.current_thread() is threading.main_thread() and _sigterm_ignored():
        restore = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


# --------------------------------------------------------------------------- workers


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: SIGKILL this process when the process that started it dies (``prctl(PR_SET_PDEATHSIG)``),
    so a pool worker never outlives a step killed with ``kill -9`` (it would go on computing for
    minutes, orphaned). ``parent_pid``: the parent as the caller knew it; already gone -> exit now.
    Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no prctl: nothing to arm
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(1)


def _init_worker(initializer: Callable[..., None] | None, initargs: tuple, parent_pid: int | None = None) -> None:
    die_with_parent(parent_pid)
    limit_threads()
    if initializer is not None:
        initializer(*initargs)


def _call(work: Callable[[Any], Any], item: Any, attempt: int, fault_hook: FaultHook | None) -> Any:
    if fault_hook is not None:
        fault_hook(item, attempt)
    return work(item)


def _call_measured(work: Callable[[Any], Any], item: Any, attempt: int, fault_hook: FaultHook | None) -> Measured:
    """:func:`_call` in a pool worker, with the worker's peak RSS during the call."""
    reset_peak_rss()
    value = _call(work, item, attempt, fault_hook)
    return Measured(value, peak_rss_bytes())


def _charge(state: _State, idx: int, error: BaseException, policy: RetryPolicy, describe: str, label: str) -> None:
    """Count one failed attempt: requeue after a backoff, or record the failure."""
    n = state.attempts[idx] = state.attempts.get(idx, 0) + 1
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if n >= policy.attempts:
        state.outcome.failures[idx] = {"error": message, "attempts": n}
        pool_logger(label).warning("%s %s failed after %d attempts: %s", label, describe, n, message)
        return
    delay = policy.backoff_s * 2 ** (n - 1)
    pool_logger(label).info("%s %s attempt %d failed (%s); retry in %.2fs", label, describe, n, message, delay)
    state.ready_at[idx] = time.monotonic() + delay
    state.queue.append(idx)


def _order(n: int, cost: Callable[[Any], float] | None, items: Sequence[Any]) -> list[int]:
    if cost is None:
        return list(range(n))
    return sorted(range(n), key=lambda i: -float(cost(items[i])))


def _run_sequential(work, items, policy, fault_hook, order, describe, label, initializer, initargs) -> _State:
    state = _State()
    if initializer is not None:
        initializer(*initargs)
    for idx in order:
        state.queue.append(idx)
        while state.queue:
            state.queue.pop()
            time.sleep(max(0.0, state.ready_at.get(idx, 0.0) - time.monotonic()))
            try:
                state.outcome.results[idx] = _call(work, items[idx], state.attempts.get(idx, 0) + 1, fault_hook)
            except Exception as exc:  # noqa: BLE001 - every error is retried, then recorded
                _charge(state, idx, exc, policy, describe(items[idx]), label)
    return state


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting on hung or doomed tasks: kill its workers first."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public API in 3.11
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _run_processes(work, items, policy, sizer, fault_hook, order, describe, label, initializer, initargs) -> _State:
    state = _State(queue=list(order))
    rank = {idx: r for r, idx in enumerate(order)}
    ctx = multiprocessing.get_context("spawn")
    while state.queue:
        size = sizer.limit  # a larger limit later (memory freed) starts a new pool once this one drains
        pool = ProcessPoolExecutor(
            max_workers=size, mp_context=ctx, initializer=_init_worker, initargs=(initializer, initargs, os.getpid())
        )
        inflight: dict[Future, tuple[int, float]] = {}
        degrade: str | None = None
        regrow = False
        while (state.queue or inflight) and degrade is None:
            now = time.monotonic()
            slots = 0 if regrow else max(0, min(size, sizer.limit) - len(inflight))
            # Never more than `limit` in flight, so submit time ~ start time and the
            # per-task deadline is meaningful; among ready items, the costliest first.
            ready = sorted((i for i in state.queue if state.ready_at.get(i, 0.0) <= now), key=rank.__getitem__)
            for idx in ready[:slots]:
                state.queue.remove(idx)
                fut = pool.submit(_call_measured, work, items[idx], state.attempts.get(idx, 0) + 1, fault_hook)
                inflight[fut] = (idx, now + policy.timeout_s)
            wake = [d for _, d in inflight.values()]
            if slots > len(ready):
                wake += [state.ready_at.get(i, now) for i in state.queue]
            timeout = max(0.0, min(wake) - now) if wake else 0.0
            if not inflight:
                if regrow:
                    break
                time.sleep(timeout)
                continue
            done, _ = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
            for fut in done:
                idx, _deadline = inflight.pop(fut)
                try:
                    measured = fut.result()
                    state.outcome.results[idx] = measured.value
                    sizer.measured(measured.peak_bytes)
                except BrokenProcessPool as exc:  # a worker died (killed, segfault, OOM killer)
                    _charge(state, idx, exc, policy, describe(items[idx]), label)
                    degrade = "a worker process died"
                except MemoryError as exc:
                    _charge(state, idx, exc, policy, describe(items[idx]), label)
                    degrade = "MemoryError"
                except Exception as exc:  # noqa: BLE001 - retried, then recorded
                    _charge(state, idx, exc, policy, describe(items[idx]), label)
            now = time.monotonic()
            for fut, (idx, deadline) in list(inflight.items()):
                if deadline <= now and not fut.done():
                    del inflight[fut]
                    error = TimeoutError(f"no result after {policy.timeout_s}s")
                    _charge(state, idx, error, policy, describe(items[idx]), label)
                    degrade = "a task timed out"
            if done and degrade is None:
                sizer.resize(pool_rss_bytes(pool))
                regrow = sizer.limit > size  # stop submitting here; drain, then a pool of the new size
        if degrade is None:
            pool.shutdown(wait=True)
            continue  # done, or a larger pool for what is left
        # Harvest what finished meanwhile; every other unfinished item goes back in the queue.
        for fut, (idx, _deadline) in inflight.items():
            exc = fut.exception() if fut.done() and not fut.cancelled() else None
            if fut.done() and not fut.cancelled() and exc is None:
                state.outcome.results[idx] = fut.result().value
            elif isinstance(exc, BrokenProcessPool):
                _charge(state, idx, exc, policy, describe(items[idx]), label)  # died with the pool
            else:
                state.queue.append(idx)
        _stop_pool(pool)
        before, after = sizer.halve()
        n = len(state.queue)
        event = f"{degrade}; halving workers {before} -> {after} and resubmitting {n} unfinished item(s)"
        state.outcome.events.append(event)
        pool_logger(label).warning("%s: %s", label, event)
    state.outcome.workers = sizer.limit
    state.outcome.sizing = sizer.sizing
    return state


def run_pool(
    work: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int,
    policy: RetryPolicy | None = None,
    sequential: bool = False,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    cost: Callable[[Any], float] | None = None,
    describe: Callable[[Any], str] = str,
    label: str = "task",
    fault_hook: FaultHook | None = None,
    memory: MemoryPolicy | None = None,
) -> PoolOutcome:
    """Run ``work(item)`` for every item; see the module docstring.

    ``work``, the items, ``initializer`` and ``fault_hook`` must be picklable (module-level
    functions or dataclass instances). ``cost(item)`` orders submission, costliest first.
    ``describe(item)`` names an item in log lines. ``workers`` is the most workers the pool uses;
    ``memory`` how free memory lowers that (default :class:`MemoryPolicy`). A pool of one item or
    ``workers <= 1`` with ``sequential=False`` still uses a worker process, so timeouts and crash
    isolation hold.
    """
    policy = policy or RetryPolicy()
    order = _order(len(items), cost, items)
    if sequential or not items:
        state = _run_sequential(work, items, policy, fault_hook, order, describe, label, initializer, initargs)
        state.outcome.workers = 1
        return state.outcome
    sizer = PoolSizer(workers, memory or MemoryPolicy(), label)
    config = sizer.start()
    why = "cores-1" if sizer.limit == sizer.requested else f"memory; {sizer.requested} requested"
    pool_logger(label).info("Enabled parallel %s processing: %d workers (%s), thread_limit=1", label, sizer.limit, why)
    state = _run_processes(work, items, policy, sizer, fault_hook, order, describe, label, initializer, initargs)
    state.outcome.config = config
    return state.outcome
