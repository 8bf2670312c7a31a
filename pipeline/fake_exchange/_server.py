"""`FakeExchange`: the REST and WebSocket sides over one market, on one aiohttp app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from os import PathLike
from types import TracebackType

from aiohttp import web

from pipeline.fake_exchange._capture_market import CaptureMarket
from pipeline.fake_exchange._clock import Clock
from pipeline.fake_exchange._faults import Faults
from pipeline.fake_exchange._hub import StreamHub
from pipeline.fake_exchange._limits import Limits
from pipeline.fake_exchange._market import Market
from pipeline.fake_exchange._rest import RestApi
from pipeline.fake_exchange._stats import Stats
from pipeline.fake_exchange._synthetic import SyntheticMarket
from pipeline.fake_exchange._ws import WsServer

__all__ = ["FakeExchange", "serve"]

log = logging.getLogger(__name__)

NO_FAULTS = Faults()
BINANCE_US_LIMITS = Limits()


class FakeExchange:
    """A local server that speaks Binance.US REST and WebSocket over a `Market`.

    Use it directly::

        async with FakeExchange(SyntheticMarket(["HBARUSDT"])) as ex:
            rest_url, ws_url = ex.rest_url, ex.ws_url   # http://127.0.0.1:P, ws://127.0.0.1:P

    or hand `make_app()` to pytest-aiohttp's `aiohttp_server` fixture. `faults`
    can be replaced while it runs (the REST countdowns restart); `stats` counts
    what it did. `wall_clock` (seconds) drives the REST weight windows and bans,
    so tests can step it instead of waiting a minute.
    """

    def __init__(
        self,
        market: Market | None = None,
        faults: Faults = NO_FAULTS,
        limits: Limits = BINANCE_US_LIMITS,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.market: Market = market if market is not None else SyntheticMarket()
        self.limits = limits
        self.stats = Stats()
        self._faults = faults
        self.hub = StreamHub(self.market, self.stats)
        self.rest = RestApi(self.market, limits, self.stats, faults, wall_clock)
        self.ws = WsServer(self.hub, limits, self.stats, self._current_faults)
        self._runner: web.AppRunner | None = None
        self.rest_url = ""
        """`http://host:port` once started (append `/api/v3/...`)."""
        self.ws_url = ""
        """`ws://host:port` once started (append `/ws/<stream>` or `/stream?streams=...`)."""

    def _current_faults(self) -> Faults:
        return self._faults

    @property
    def faults(self) -> Faults:
        """The faults in force; assigning new ones takes effect at once."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self.rest.arm(faults)

    def make_app(self) -> web.Application:
        """A fresh aiohttp application serving this exchange (for `aiohttp_server`)."""
        app = web.Application()
        self.rest.add_routes(app)
        self.ws.add_routes(app)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.ws.close_all()

    async def _on_cleanup(self, _: web.Application) -> None:
        await self.hub.close()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, str]:
        """Listen on `host:port` (0: any free port); returns `(rest_url, ws_url)`."""
        if self._runner is not None:
            raise RuntimeError("the fake exchange is already running")
        runner = web.AppRunner(self.make_app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.rest_url = f"http://{host}:{bound_port}"
        self.ws_url = f"ws://{host}:{bound_port}"
        return self.rest_url, self.ws_url

    async def stop(self) -> None:
        """Close every socket with a close frame, then stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def drop_connections(self) -> None:
        """Drop every open socket at once, without a close frame (a network failure)."""
        self.ws.drop_all()

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    port: int = 0,
    capture: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
    symbols: Sequence[str] = ("HBARUSDT",),
    faults: Faults = NO_FAULTS,
    *,
    host: str = "127.0.0.1",
    limits: Limits = BINANCE_US_LIMITS,
    speed: float = 1.0,
    seed: int = 0,
    any_symbol: bool = False,
    ready: Callable[[FakeExchange], None] | None = None,
) -> None:
    """Run a fake exchange until cancelled (the CLI's `hbar-data fake-exchange`).

    With `capture`, the market replays it at `speed`; otherwise it is synthetic over
    `symbols`. `ready` is called once the server listens (to print its URLs).
    Raises `pipeline.errors.CaptureError` if the capture cannot be read.
    """
    market: Market
    if capture is not None:
        market = CaptureMarket(capture, speed=speed, seed=seed)
    else:
        market = SyntheticMarket(
            symbols, clock=Clock(speed=speed), seed=seed, any_symbol=any_symbol
        )
    exchange = FakeExchange(market, faults, limits)
    await exchange.start(host, port)
    try:
        if ready is not None:
            ready(exchange)
        await asyncio.Event().wait()
    finally:
        await exchange.stop()
