"""bacpypes3 failures -> the failure vocabulary of :mod:`drivers.base`, for the driver and discovery.

bacpypes3 reports a device's Error/Reject/Abort reply as an ``ErrorRejectAbortNack`` (a BaseException);
:func:`request_error` turns it, a timeout or a local failure into a :class:`~drivers.base.DriverError`
carrying one code of the vocabulary. This is the one place that catches them.
"""

from __future__ import annotations

from typing import Any

from bacpypes3.apdu import AbortPDU, ErrorPDU, ErrorRejectAbortNack, RejectPDU

from drivers.base import (
    DeviceRejectedError,
    DriverError,
    FailureCode,
    PermanentError,
    TransientError,
    bacnet_error,
)

__all__ = ["error_code", "kebab", "request_error"]

_NO_RESPONSE = bacnet_error("abort", "no-response")


def kebab(text: Any) -> str:
    """A bacpypes3 name (``analogInput`` or ``analog-input``) in BACnet's kebab-case: ``analog-input``."""
    s = str(text)
    out = "".join("-" + c.lower() if c.isupper() else c for c in s)
    return out.lstrip("-")


def error_code(exc: ErrorRejectAbortNack) -> str:
    """``bacnet:<class>:<code>`` for an Error, ``bacnet:reject:<reason>``, ``bacnet:abort:<reason>``.

    ``protocol`` for an error reply that names no error class (nothing else in bacpypes3 raises these)."""
    try:
        if isinstance(exc, ErrorPDU):
            # Some services' errors (ChangeList, CreateObject, WritePropertyMultiple...) nest an ErrorType.
            err = getattr(exc, "errorType", None) or exc
            return bacnet_error(getattr(err, "errorClass", None), getattr(err, "errorCode", None))
        if isinstance(exc, RejectPDU):
            return bacnet_error("reject", exc.apduAbortRejectReason)
        if isinstance(exc, AbortPDU):
            return bacnet_error("abort", exc.apduAbortRejectReason)
    except ValueError:
        pass
    return FailureCode.PROTOCOL


def request_error(
    exc: BaseException, *, device: str, point: str | None = None, what: str, timeout_s: float
) -> DriverError:
    """The DriverError for a failed bacpypes3 request; ``what`` says which request (and to whom).

    A timeout (ours, or the stack's abort ``no-response``) is a transient ``timeout``; a device's error
    reply is a :class:`DeviceRejectedError`; anything else
    the stack raised (socket error, an address or value it cannot encode) is ``request_failed``."""
    if isinstance(exc, TimeoutError):
        return TransientError(
            f"{what}: no answer in {timeout_s} s", device=device, point=point, code=FailureCode.TIMEOUT
        )
    if isinstance(exc, ErrorRejectAbortNack):
        code = error_code(exc)
        if code == _NO_RESPONSE:
            # The stack's own APDU timeout (apdu_timeout_s below timeout_s) fired first: a timeout all the
            # same, and must be treated as one (the device may have restarted and forgotten us).
            return TransientError(
                f"{what}: no answer (the stack gave up: abort no-response)",
                device=device,
                point=point,
                code=FailureCode.TIMEOUT,
            )
        # The code says it all; bacpypes3's repr of a PDU is an object address, not a reason.
        return DeviceRejectedError(
            f"{what}: {code.removeprefix('bacnet:')}", device=device, point=point, code=code
        )
    return PermanentError(f"{what}: {exc}", device=device, point=point, code=FailureCode.REQUEST_FAILED)
