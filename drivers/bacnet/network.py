"""One bacpypes3 Application per local BACnet/IP address, shared by every BACnet device of the site.

bacpypes3 quirks handled here (STACK.md): a local address that is not on this host makes the stack's bind
retry forever while requests hang, so the address is test-bound first; an Application closed before its
sockets are bound leaks them, so :meth:`BacnetNetwork.start` waits for the bind and :meth:`close` cancels
a bind still pending. COV notifications are dispatched here, by subscriber process id, to the driver that
subscribed: bacpypes3's own ``change_of_value`` context manager renews from fire-and-forget tasks whose
failures nobody sees, so drivers manage their subscriptions themselves.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

import structlog
from bacpypes3.apdu import (
    ConfirmedCOVNotificationRequest,
    SimpleAckPDU,
    UnconfirmedCOVNotificationRequest,
)
from bacpypes3.app import Application
from bacpypes3.errors import ServicesError
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject

from drivers.bacnet.options import BacnetNetworkOptions, parse_address
from drivers.base import FailureCode, UtcClock, utc_now

__all__ = ["BacnetNetwork", "CovHandler", "LocalAddressError", "check_local_address"]

_log = structlog.get_logger("drivers.bacnet")

# handler(monitored object identifier, list of bacpypes3 PropertyValue)
CovHandler = Callable[[Any, list[Any]], None]
_BIND_TIMEOUT_S = 5.0


class LocalAddressError(OSError):
    """The gateway's BACnet/IP address cannot be bound: not an address of this host, or the port is taken.

    ``code``: ``address_not_local``, ``port_in_use`` or ``bind_failed``."""

    def __init__(self, message: str, *, address: str, code: FailureCode) -> None:
        super().__init__(message)
        self.address = address
        self.code = code


def check_local_address(address: str) -> None:
    """Bind a plain UDP socket to ``address`` and let it go; raise LocalAddressError with the reason.

    bacpypes3 binds with SO_REUSEPORT; this probe does not, so it also fails when another BACnet stack
    (or a second agent) already holds the port."""
    ip, _prefix, port = parse_address(address)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((ip, port))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LocalAddressError(
                f"BACnet local address {address}: {ip} is not an address of this host "
                "(set bacnet.local_address to one of this gateway's IPs, or 0.0.0.0)",
                address=address,
                code=FailureCode.ADDRESS_NOT_LOCAL,
            ) from exc
        if exc.errno == errno.EADDRINUSE:
            raise LocalAddressError(
                f"BACnet local address {address}: UDP port {port} is already in use by another process "
                "(another BACnet stack or agent?)",
                address=address,
                code=FailureCode.PORT_IN_USE,
            ) from exc
        raise LocalAddressError(
            f"BACnet local address {address}: cannot bind: {exc}",
            address=address,
            code=FailureCode.BIND_FAILED,
        ) from exc
    finally:
        probe.close()


class _AgentApplication(Application):  # type: ignore[misc]
    """An Application that hands whole COV notifications (all values at once) to the network."""

    cov_dispatch: Callable[[int, Any, list[Any]], bool]

    async def do_ConfirmedCOVNotificationRequest(self, apdu: ConfirmedCOVNotificationRequest) -> None:
        if not self.cov_dispatch(
            apdu.subscriberProcessIdentifier, apdu.monitoredObjectIdentifier, list(apdu.listOfValues)
        ):
            raise ServicesError(errorCode="unknownSubscription")
        await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: UnconfirmedCOVNotificationRequest) -> None:
        self.cov_dispatch(
            apdu.subscriberProcessIdentifier, apdu.monitoredObjectIdentifier, list(apdu.listOfValues)
        )


class BacnetNetwork:
    """The gateway's BACnet/IP port. ``start`` before the drivers connect; ``close`` after they close."""

    def __init__(self, *, options: BacnetNetworkOptions, clock: UtcClock = utc_now) -> None:
        self.options = options
        self.clock = clock
        self._app: _AgentApplication | None = None
        self._lock = asyncio.Lock()
        self._handlers: dict[int, CovHandler] = {}
        self._next_spid = 1

    @property
    def started(self) -> bool:
        return self._app is not None

    @property
    def app(self) -> Application:
        if self._app is None:
            raise RuntimeError("BacnetNetwork is not started")
        return self._app

    async def start(self) -> None:
        """Bind the local address (idempotent). Raises LocalAddressError with the reason."""
        async with self._lock:
            if self._app is not None:
                return
            opts = self.options
            check_local_address(opts.local_address)
            device = DeviceObject(
                objectIdentifier=("device", opts.device_instance),
                objectName=opts.device_name,
                vendorIdentifier=opts.vendor_identifier,
                maxApduLengthAccepted=opts.max_apdu,
                segmentationSupported="segmented-both" if opts.segmentation else "no-segmentation",
                apduTimeout=int(opts.apdu_timeout_s * 1000),
                numberOfApduRetries=opts.apdu_retries,
            )
            port = NetworkPortObject(
                opts.local_address, objectIdentifier=("network-port", 1), objectName="NP-1"
            )
            app = _AgentApplication.from_object_list([device, port])
            app.cov_dispatch = self._dispatch
            tasks = [t for ll in app.link_layers.values() for t in ll.server._transport_tasks]
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), _BIND_TIMEOUT_S)
            except (TimeoutError, OSError) as exc:
                for t in tasks:
                    t.cancel()
                app.close()
                raise LocalAddressError(
                    f"BACnet local address {opts.local_address}: bind timed out ({_BIND_TIMEOUT_S} s)",
                    address=opts.local_address,
                    code=FailureCode.BIND_FAILED,
                ) from exc
            self._app = app
            _log.info("bacnet_network_bound", address=opts.local_address)

    async def close(self) -> None:
        async with self._lock:
            app, self._app = self._app, None
            self._handlers.clear()
            if app is not None:
                app.close()
                await asyncio.sleep(0)  # let the transports' close callbacks run

    # ---- COV plumbing for drivers ----

    def register_cov(self, handler: CovHandler) -> int:
        """Allocate a subscriber process id whose notifications go to ``handler``."""
        while self._next_spid in self._handlers:
            self._next_spid = self._next_spid % 4194303 + 1
        spid = self._next_spid
        self._next_spid = self._next_spid % 4194303 + 1
        self._handlers[spid] = handler
        return spid

    def unregister_cov(self, spid: int) -> None:
        self._handlers.pop(spid, None)

    def _dispatch(self, spid: int, objid: Any, values: list[Any]) -> bool:
        handler = self._handlers.get(spid)
        if handler is None:
            return False
        try:
            handler(objid, values)
        except Exception:  # a handler bug must not turn into an error reply to the device
            _log.exception("cov_handler_failed", spid=spid, object=str(objid))
        return True
