"""Servo buses a leader arm is read from: Dynamixel (GELLO, ``dynamixel-sdk``, protocol 2.0) and
Feetech STS (LeRobot SO-100/SO-101, ``feetech-servo-sdk``). One registry, ``SERVO_BUSES``.

Each tick one sync-read instruction asks every servo for its present position and each servo
answers with a status packet; the SDK checks headers and checksums. A failed exchange (timeout,
corrupt reply) raises :class:`BusError` with the SDK's own words; the port vanishing (USB
adapter unplugged) raises :class:`BusLost`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from robot_policy.registry import Registry
from robot_policy.teleop.base import DeviceNotFound, TeleopError, import_sdk


class BusError(TeleopError):
    """One exchange on the bus failed (timeout, corrupt or missing reply)."""


class BusLost(TeleopError):
    """The serial port itself failed (adapter unplugged)."""


class ServoBus(abc.ABC):
    """Present positions of a set of servos, in raw ticks."""

    module: ClassVar[str] = ""
    package: ClassVar[str] = ""
    ticks_per_rev: ClassVar[int] = 4096
    position_address: ClassVar[int] = 0
    position_bytes: ClassVar[int] = 0
    name: ClassVar[str] = ""

    def __init__(self, port: str, baudrate: int, ids: list[int], sdk=None):
        if not ids or len(set(ids)) != len(ids) or any(not 0 <= i < 253 for i in ids):
            raise TeleopError(f"{self.name} bus: servo ids must be distinct values in 0-252, got {ids}")
        self.port_name = port
        self.baudrate = int(baudrate)
        self.ids = list(ids)
        self._sdk = sdk
        self.sdk = None
        self.port = None
        self.packet = None
        self.reader = None

    def open(self) -> None:
        sdk = self._sdk or import_sdk(self.module, backend=f"leader ({self.name})", package=self.package)
        port = sdk.PortHandler(self.port_name)
        try:
            opened = port.openPort()
        except Exception as e:  # pyserial: SerialException (an OSError subclass in practice)
            raise DeviceNotFound(
                f"{self.name} leader: cannot open serial port {self.port_name}: {e}; check the cable, the "
                "device option port (e.g. /dev/ttyUSB0) and that you are in the dialout group"
            ) from e
        if not opened or not port.setBaudRate(self.baudrate):
            port.closePort()
            raise DeviceNotFound(
                f"{self.name} leader: port {self.port_name} refused baud rate {self.baudrate}"
            )
        self.sdk, self.port = sdk, port
        self.packet = self._packet_handler(sdk)
        self.reader = sdk.GroupSyncRead(port, self.packet, self.position_address, self.position_bytes)
        for i in self.ids:
            if not self.reader.addParam(i):
                raise TeleopError(f"{self.name} leader: servo id {i} could not be added to the sync read")

    @abc.abstractmethod
    def _packet_handler(self, sdk): ...

    @abc.abstractmethod
    def _decode(self, value: int) -> int:
        """The register value as a signed tick count."""

    def read_ticks(self) -> np.ndarray:
        if self.reader is None:
            raise TeleopError(f"{self.name} bus is not open")
        try:
            result = self.reader.txRxPacket()
        except Exception as e:  # noqa: BLE001
            # The port vanished: pyserial raises SerialException, termios.error (flushing a
            # dead tty) or OSError, depending on where the SDK was in the exchange.
            raise BusLost(f"{self.name} leader: serial port {self.port_name} failed: {e}") from e
        if result != self.sdk.COMM_SUCCESS:
            raise BusError(f"{self.name} leader: sync read failed: {self.packet.getTxRxResult(result)}")
        out = np.zeros(len(self.ids), dtype=np.int64)
        for k, i in enumerate(self.ids):
            if not self.reader.isAvailable(i, self.position_address, self.position_bytes):
                raise BusError(f"{self.name} leader: servo {i} sent no position in the sync read")
            out[k] = self._decode(int(self.reader.getData(i, self.position_address, self.position_bytes)))
        return out

    def read_radians(self) -> np.ndarray:
        return self.read_ticks() * (2 * np.pi / self.ticks_per_rev)

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.closePort()
            except Exception:  # noqa: BLE001 - the port may already be gone
                pass
        self.port = self.reader = None


SERVO_BUSES: Registry[type[ServoBus]] = Registry("servo bus")


@SERVO_BUSES.register("dynamixel")
class DynamixelBus(ServoBus):
    """Dynamixel X-series (GELLO's XL330): protocol 2.0, Present Position at 132 (4 bytes, signed)."""

    name = "dynamixel"
    module = "dynamixel_sdk"
    package = "dynamixel-sdk"
    position_address = 132
    position_bytes = 4

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(2.0)

    def _decode(self, value: int) -> int:
        return value - (1 << 32) if value >= (1 << 31) else value


@SERVO_BUSES.register("feetech")
class FeetechBus(ServoBus):
    """Feetech STS3215 (SO-100/SO-101): Present Position at 56 (2 bytes, little-endian, bit 15 the
    sign as the servo encodes it)."""

    name = "feetech"
    module = "scservo_sdk"
    package = "feetech-servo-sdk"
    position_address = 56
    position_bytes = 2

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(0)  # 0: little-endian registers (STS series)

    def _decode(self, value: int) -> int:
        return -(value & 0x7FFF) if value & 0x8000 else value
