"""The one error tree of the project.

Everything a user must fix (a bad option, an unreadable capture, an unknown
symbol) derives from `PipelineError`; the CLI maps it to exit status 2.
Problems inside a stream are never raised: they are events
(`operators.events.BadMessage`, `Disconnected`, `Gap`).
"""

from __future__ import annotations

__all__ = [
    "BannedError",
    "BinanceAPIError",
    "CaptureError",
    "ExchangeError",
    "ExchangeUnavailableError",
    "PipelineError",
    "RateLimitedError",
    "UnknownSymbolError",
    "UsageError",
]


class PipelineError(Exception):
    """Base of every error the project raises on purpose."""


class UsageError(PipelineError):
    """An option or argument the user gave cannot be used (exit status 2)."""


class CaptureError(PipelineError):
    """A capture file cannot be opened, decompressed or recognised (exit status 2)."""


# ---------------------------------------------------------------- the exchange
# Raised by the live sources (`pipeline.rest`, `pipeline.ws`) when the exchange
# refuses a request or cannot be reached after every retry. Each one names the
# request (path and query) so the user can repeat it by hand.


class ExchangeError(PipelineError):
    """The exchange refused a request, or could not be reached after every retry."""

    def __init__(self, message: str, request: str = "") -> None:
        super().__init__(message)
        self.request = request
        """The request that failed: path and query, e.g. `/api/v3/klines?symbol=X&...`."""


class BinanceAPIError(ExchangeError):
    """The exchange answered with an error body `{"code": <int>, "msg": <str>}`.

    `code` is Binance's error code (`-1121`, `-1100`, ...), or `None` when the
    body was not a Binance error object (then `msg` holds the start of the body).
    """

    def __init__(self, code: int | None, msg: str, request: str, status: int = 0) -> None:
        shown = f"code {code}" if code is not None else "no error code"
        super().__init__(f"{request} failed with HTTP {status}, {shown}: {msg}", request)
        self.code = code
        self.msg = msg
        self.status = status
        """The HTTP status of the response (0 when unknown)."""


class UnknownSymbolError(ExchangeError):
    """A symbol the venue does not know or does not trade (exit status 2).

    Raised for a `-1121 Invalid symbol.` error body, and by
    `RestClient.check_symbols` for a symbol missing from `exchangeInfo` or whose
    status is not `TRADING`, before anything subscribes to it.
    """

    def __init__(self, problems: dict[str, str], request: str, code: int | None = None) -> None:
        listed = "; ".join(f"{symbol!r}: {why}" for symbol, why in problems.items())
        noun = "symbol" if len(problems) == 1 else "symbols"
        super().__init__(f"unknown {noun} ({request}): {listed}", request)
        self.problems = dict(problems)
        """Each offending symbol and what is wrong with it."""
        self.code = code
        """Binance's error code when the exchange reported it (`-1121`), else `None`."""

    @property
    def symbols(self) -> list[str]:
        """The offending symbols, in the order they were found."""
        return list(self.problems)


class RateLimitedError(ExchangeError):
    """HTTP 429 kept coming back after every retry, or asked for too long a wait."""

    def __init__(self, request: str, retry_after: float, detail: str = "") -> None:
        message = f"{request} rate limited (HTTP 429), Retry-After {retry_after:g} s"
        super().__init__(f"{message}: {detail}" if detail else message, request)
        self.retry_after = retry_after
        """Seconds the exchange asked the client to wait."""


class BannedError(ExchangeError):
    """HTTP 418: the IP is banned, and the ban outlasts what the client will wait."""

    def __init__(self, request: str, retry_after: float, detail: str = "") -> None:
        message = f"{request}: IP banned (HTTP 418) for {retry_after:g} s"
        super().__init__(f"{message}: {detail}" if detail else message, request)
        self.retry_after = retry_after
        """Seconds until the ban ends, from the `Retry-After` header."""


class ExchangeUnavailableError(ExchangeError):
    """Timeouts, connection errors or 5xx answers outlasted every retry."""

    def __init__(self, request: str, attempts: int, last_problem: str) -> None:
        super().__init__(
            f"{request} failed after {attempts} attempts; last problem: {last_problem}", request
        )
        self.attempts = attempts
        self.last_problem = last_problem
