"""Batched prediction over a tile grid, with a reader thread prefetching tiles into a bounded queue.

The reader reads one strip of model-grid rows per tile row (one GDAL call, resampled on read), cuts
the tiles out of it, skips tiles without a valid pixel and stacks the rest into ``(N, T, T, 3)`` uint8
batches; the caller's thread runs the network (ONNX Runtime and GDAL both release the GIL, so reading
overlaps inference); on CPU several single-threaded calls run at once (:func:`plan_streams`). Results
go, in tile order, to a consumer, normally a :class:`Worker` that blends and writes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np

from .mosaic import ModelGrid, Mosaic
from .tiles import Tile

_END = object()


@dataclass
class Batch:
    """Tiles ready for the network. ``images`` are zero-padded to ``tile_size`` at bottom/right."""

    tiles: list[Tile]
    images: np.ndarray  # (n, T, T, 3) uint8
    valid: list[np.ndarray | None]  # per tile: (height, width) bool, or None = valid everywhere
    skipped: int = 0  # tiles without valid pixels passed over since the previous batch


@dataclass
class InferStats:
    tiles: int = 0
    skipped: int = 0
    forward_s: float = 0.0
    forward_cpu_s: float = 0.0  # CPU time of the calling threads (ONNX Runtime runs single-threaded there)
    read_wait_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def iter_batches(mosaic: Mosaic, grid: ModelGrid, tiles: Iterable[Tile], *, tile_size: int,
                 batch_size: int) -> Iterator[Batch]:
    """Read ``tiles`` (row-major) strip by strip and yield batches of those with valid pixels.

    Tiles are copied into the batch as soon as their strip is read (the strip buffer is reused).
    ``Batch.valid[i]`` is ``None`` when tile ``i`` is valid everywhere. A last batch with no tiles but
    ``skipped > 0`` reports trailing skipped tiles.
    """
    tiles_in: list[Tile] = []
    valids: list[np.ndarray | None] = []
    images = np.empty((batch_size, tile_size, tile_size, 3), np.uint8)
    skipped = 0

    def make() -> Batch:
        nonlocal tiles_in, valids, images, skipped
        batch = Batch(tiles_in, images[:len(tiles_in)], valids, skipped)
        tiles_in, valids, skipped = [], [], 0
        images = np.empty((batch_size, tile_size, tile_size, 3), np.uint8)
        return batch

    for row, row_tiles in groupby(tiles, key=lambda t: t.row):
        row_tiles = list(row_tiles)
        rgb, valid = mosaic.read_strip(grid, row, row_tiles[0].height, reuse=True)
        all_valid = mosaic.mask_kind == "none" or bool(valid.all())
        any_valid_cols = None if all_valid else valid.any(axis=0)
        for t in row_tiles:
            cols = slice(t.col, t.col + t.width)
            tile_valid = None
            if not all_valid:
                if not any_valid_cols[cols].any():
                    skipped += 1
                    continue
                tile_valid = valid[:, cols]
                tile_valid = None if tile_valid.all() else tile_valid.copy()
            i = len(tiles_in)
            images[i, :t.height, :t.width] = rgb[:, cols]
            if t.height < tile_size or t.width < tile_size:  # a raster smaller than a tile: pad
                images[i, t.height:] = 0
                images[i, :, t.width:] = 0
            tiles_in.append(t)
            valids.append(tile_valid)
            if len(tiles_in) == batch_size:
                yield make()
    if tiles_in or skipped:
        yield make()


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, tta: bool) -> np.ndarray:
    """``predict(images)``, averaged with the prediction on the left-right flipped batch when ``tta``."""
    prob = predict(images)
    if tta:
        flipped = predict(np.ascontiguousarray(images[:, :, ::-1]))
        prob = 0.5 * (prob + flipped[:, :, ::-1])
    return prob


def flip_averaged(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` with flip test-time augmentation: :func:`predict_tta` with ``tta=True``."""

    def averaged(images: np.ndarray) -> np.ndarray:
        return predict_tta(predict, images, True)

    return averaged


class Prefetcher:
    """Run an iterator in a daemon thread, handing items over through a queue of ``depth`` items.

    Exceptions raised in the thread are re-raised in the consumer. ``close()`` stops the producer.
    """

    def __init__(self, source: Iterator[Any], depth: int = 2, name: str = "poppyscan-reader") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Worker:
    """A consumer thread: ``put(item)`` hands items to ``handle`` through a bounded queue.

    ``close()`` drains the queue, joins the thread and re-raises the first error ``handle`` raised;
    ``put`` raises it early too, so a failing writer stops inference promptly.
    """

    def __init__(self, handle: Callable[[Any], None], depth: int = 2, name: str = "poppyscan-writer") -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._closed = False
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue
            t0 = time.perf_counter()
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer
                self._error = exc
            self.busy_s += time.perf_counter() - t0

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_END)
            self._thread.join()
        if self._error is not None:
            raise self._error


def plan_streams(device: str, *, streams: int, threads: int, batch_size: int) -> tuple[int, int, int]:
    """How to run the network: ``(streams, intra-op threads per stream, tiles per call)``.

    On CPU the default (``streams=0``, ``threads=0``) is one single-threaded ONNX Runtime call per core,
    running concurrently: no intra-op barriers means no CPU burnt spin-waiting for a preempted partner
    thread (measured ~1.6x the throughput of one 2-thread call on 2 busy cores). ``batch_size`` tiles
    are split across the streams, so memory in flight stays the same. CUDA uses one stream.

    >>> plan_streams("cuda", streams=0, threads=0, batch_size=8)
    (1, 0, 8)
    >>> plan_streams("cpu", streams=2, threads=0, batch_size=8)[::2]
    (2, 4)
    """
    if device != "cpu":
        return 1, threads, batch_size
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    streams = streams or cores
    threads = threads or max(1, cores // streams)
    return streams, threads, max(1, -(-batch_size // streams))


def run_inference(batches: Iterator[Batch], predict: Callable[[np.ndarray], np.ndarray], *,
                  tta: bool, consume: Callable[[Batch, np.ndarray], None],
                  progress: Callable[[int, list[Tile]], None] | None = None, streams: int = 1) -> InferStats:
    """Predict every batch from ``batches`` (prefetched in a thread) and pass results to ``consume``.

    Up to ``streams`` batches are predicted concurrently; results are consumed in input order (the
    blender needs row-major tiles). ``progress(n_done, tiles)`` is called as batches finish and for
    tiles skipped without valid pixels.
    """
    stats = InferStats()
    reader = Prefetcher(batches, depth=max(2, streams))
    pool = ThreadPoolExecutor(streams, thread_name_prefix="poppyscan-infer") if streams > 1 else None
    pending: deque[tuple[Batch, Any]] = deque()

    def timed(images: np.ndarray) -> tuple[np.ndarray, float, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        prob = predict_tta(predict, images, tta)
        return prob, time.perf_counter() - t0, time.thread_time() - c0

    def finish_oldest() -> None:
        batch, job = pending.popleft()
        prob, seconds, cpu = job.result() if pool is not None else job
        stats.forward_s += seconds
        stats.forward_cpu_s += cpu
        stats.tiles += len(batch.tiles)
        consume(batch, prob)
        if progress is not None:
            progress(len(batch.tiles), batch.tiles)

    try:
        t_wait = time.perf_counter()
        for batch in reader:
            stats.read_wait_s += time.perf_counter() - t_wait
            if batch.skipped:
                stats.skipped += batch.skipped
                if progress is not None:
                    progress(batch.skipped, [])
            if batch.tiles:
                job = pool.submit(timed, batch.images) if pool is not None else timed(batch.images)
                pending.append((batch, job))
            while len(pending) >= streams:
                finish_oldest()
            t_wait = time.perf_counter()
        while pending:
            finish_oldest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        reader.close()
    return stats
