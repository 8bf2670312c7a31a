"""`BookFrame`: the `book` buffer, one symbol's local L2 book as a Polars frame.

It folds `operators.local_book`'s `BookUpdate`s into a price -> quantity dict
per side (a dict write per changed level); sorting and the Polars frame wait
until the frame is read.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from operators import BookEvent, BookUpdate
from sinks._rolling import RollingFrame, frame_from_columns
from sinks.rolling_frame import register_frame
from sinks.schemas import BOOK

__all__ = ["DEFAULT_BOOK_DEPTH", "BookFrame"]

DEFAULT_BOOK_DEPTH: Final = 5000
"""Levels per side kept in the frame: the deepest REST depth snapshot Binance serves."""

_Snapshot = tuple[dict[float, float], dict[float, float], int]


class BookFrame(RollingFrame[BookEvent]):
    """Side, price, quantity, update_id: bids best first, then asks best first.

    Every row carries the book's `update_id` (the last applied diff's `u`). No
    row has a zero quantity. While the book is out of sync the frame keeps the
    last state it had in sync (`stale` is True), so at the end of a run it
    holds that state, or nothing if the book never synced.

    `write` takes what `local_book` emits: a `BookUpdate(reset=True)` replaces
    the book; an in-sync update applies its changes; an out-of-sync one only
    marks the frame stale. `BookResync` and updates of another symbol are
    no-ops (False), as are changes that arrive before the first reset (a frame
    attached mid-stream waits for the next resync rather than guess).
    """

    def __init__(
        self, symbol: str | None = None, depth: int = DEFAULT_BOOK_DEPTH, name: str = "book"
    ) -> None:
        """`symbol`: only its updates are kept (None: any, for a stream of one
        symbol). `depth`: most levels per side in the frame (the best ones)."""
        super().__init__(name, BOOK, depth)
        self.symbol = None if symbol is None else symbol.upper()
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._update_id = 0
        self._synced = False

    @property
    def stale(self) -> bool:
        """True while the book is not in sync (also before it first synced)."""
        return not self._synced

    @property
    def update_id(self) -> int:
        """The `u` of the last diff in the frame; 0 if the book never synced."""
        return self._update_id

    def __len__(self) -> int:
        depth = self.capacity
        return min(len(self._bids), depth) + min(len(self._asks), depth)

    def _apply(self, event: BookEvent) -> bool:
        if type(event) is not BookUpdate:
            return False
        if self.symbol is not None and event.symbol != self.symbol:
            return False
        if event.reset:
            self._bids = {p: q for p, q in event.bids if q}
            self._asks = {p: q for p, q in event.asks if q}
            self._update_id = event.update_id
            self._synced = True
            return True
        if not self._synced:
            return False
        if not event.synced:
            # The book stays as it was: that is the state to serve until a resync.
            self._synced = False
            return True
        bids = self._bids
        for p, q in event.bids:
            if q:
                bids[p] = q
            else:
                bids.pop(p, None)
        asks = self._asks
        for p, q in event.asks:
            if q:
                asks[p] = q
            else:
                asks.pop(p, None)
        self._update_id = event.update_id
        return True

    def _snapshot(self) -> _Snapshot:
        return dict(self._bids), dict(self._asks), self._update_id

    def _build(self, snapshot: _Snapshot) -> pl.DataFrame:
        bids, asks, update_id = snapshot
        depth = self.capacity
        bid_prices = sorted(bids, reverse=True)[:depth]
        ask_prices = sorted(asks)[:depth]
        n_bids = len(bid_prices)
        n_asks = len(ask_prices)
        return frame_from_columns(
            self.schema,
            [
                ["bid"] * n_bids + ["ask"] * n_asks,
                bid_prices + ask_prices,
                [bids[p] for p in bid_prices] + [asks[p] for p in ask_prices],
                [update_id] * (n_bids + n_asks),
            ],
        )


def _new_book_frame(depth: int | None) -> BookFrame:
    return BookFrame(depth=DEFAULT_BOOK_DEPTH if depth is None else depth)


# `new_frame("book")` then makes one; its capacity is the depth per side.
register_frame("book", _new_book_frame)
