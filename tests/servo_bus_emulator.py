"""A servo bus on a pseudo-terminal, speaking the servos' wire protocols, for leader-arm tests.

The real SDKs (``dynamixel_sdk``, ``scservo_sdk``) open the pty's slave end with pyserial exactly
as they open a USB adapter; this thread answers on the master end as the servos would:

- Dynamixel Protocol 2.0: instruction ``FF FF FD 00 ID LEN_L LEN_H INST PARAMS CRC_L CRC_H``
  (CRC-16, polynomial 0x8005, over everything before it; ``FF FF FD`` in the payload is stuffed
  with an extra ``FD``). Sync Read (0x82): params address(2), length(2), ids; every listed
  servo answers, in order, with a status packet ``... ID LEN 0x55 ERR DATA CRC``.
- Feetech SCS/STS (SO-101): ``FF FF ID LEN INST PARAMS CHK`` with ``CHK = ~(ID + LEN + INST +
  sum(PARAMS)) & 0xFF``; Sync Read (0x82): params address, length, ids; replies
  ``FF FF ID LEN ERR DATA CHK``.

Register maps hold only what a leader is read for: Present Position (Dynamixel X: 132, 4 bytes;
STS3215: 56, 2 bytes, bit 15 = sign). An instruction with a bad checksum gets no answer (the
servos drop it), as does an id that is not on the bus. Faults to inject: ``corrupt(n)`` (the next
n replies carry a wrong checksum), ``silence(ids)`` (those servos stop answering), ``unplug()``
(the adapter vanishes: the master end closes, the SDK's port read fails).
"""

from __future__ import annotations

import os
import select
import threading
import tty


def crc16(data: bytes) -> int:
    """Dynamixel Protocol 2.0 CRC (CRC-16/BUYPASS: poly 0x8005, init 0, no reflection)."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _stuff(payload: bytes) -> bytes:
    out = bytearray()
    for b in payload:
        out.append(b)
        if len(out) >= 3 and out[-3:] == b"\xff\xff\xfd":
            out.append(0xFD)
    return bytes(out)


def _unstuff(payload: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(payload):
        out.append(payload[i])
        if len(out) >= 3 and out[-3:] == b"\xff\xff\xfd" and i + 1 < len(payload) and payload[i + 1] == 0xFD:
            i += 1  # skip the stuffed byte
        i += 1
    return bytes(out)


class ServoBusEmulator:
    """Servos ``positions`` ({id: ticks}) on a pty; ``port`` is the path an SDK opens."""

    PROTOCOLS = ("dynamixel", "feetech")

    def __init__(self, protocol: str, positions: dict[int, int]):
        if protocol not in self.PROTOCOLS:
            raise ValueError(f"protocol must be one of {self.PROTOCOLS}")
        self.protocol = protocol
        self.positions = dict(positions)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before pyserial configures it
        self.port = os.ttyname(self._slave)
        self.instructions = 0
        self.bad_instructions = 0
        self._corrupt = 0
        self._silent: set[int] = set()
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # -- fault injection ---------------------------------------------------------------------
    def set_position(self, servo: int, ticks: int) -> None:
        with self._lock:
            self.positions[servo] = int(ticks)

    def corrupt(self, n: int = 1) -> None:
        with self._lock:
            self._corrupt += n

    def silence(self, ids) -> None:
        with self._lock:
            self._silent = set(ids)

    def unplug(self) -> None:
        """The adapter disappears: stop answering and close both pty ends we hold."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self._slave = -1

    close = unplug

    # -- the bus ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.02)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            self._buf += data
            while True:
                pkt = self._next_packet()
                if pkt is None:
                    break
                for reply in self._answer(*pkt):
                    os.write(self.master, reply)

    def _next_packet(self):
        """(id, instruction, params) of the next complete instruction, or None."""
        buf = self._buf
        if self.protocol == "dynamixel":
            start = buf.find(b"\xff\xff\xfd\x00")
            if start < 0:
                del buf[: max(0, len(buf) - 3)]
                return None
            del buf[:start]
            if len(buf) < 7:
                return None
            length = buf[5] | (buf[6] << 8)
            if len(buf) < 7 + length:
                return None
            raw = bytes(buf[: 7 + length])
            del buf[: 7 + length]
            if crc16(raw[:-2]) != (raw[-2] | (raw[-1] << 8)):
                self.bad_instructions += 1
                return self._next_packet()
            body = _unstuff(raw[8:-2])
            return raw[4], raw[7], body
        start = buf.find(b"\xff\xff")
        if start < 0:
            buf.clear()
            return None
        del buf[:start]
        if len(buf) < 4:
            return None
        length = buf[3]
        if len(buf) < 4 + length:
            return None
        raw = bytes(buf[: 4 + length])
        del buf[: 4 + length]
        if (~sum(raw[2:-1])) & 0xFF != raw[-1]:
            self.bad_instructions += 1
            return self._next_packet()
        return raw[2], raw[4], raw[5:-1]

    def _register(self, servo: int, address: int, length: int) -> bytes | None:
        pos = self.positions[servo]
        if self.protocol == "dynamixel" and (address, length) == (132, 4):
            return (pos & 0xFFFFFFFF).to_bytes(4, "little")
        if self.protocol == "feetech" and (address, length) == (56, 2):
            word = (abs(pos) & 0x7FFF) | (0x8000 if pos < 0 else 0)
            return word.to_bytes(2, "little")
        return None  # not a register this emulator models: no answer

    def _answer(self, servo: int, inst: int, params: bytes) -> list[bytes]:
        self.instructions += 1
        if inst != 0x82:
            return []
        if self.protocol == "dynamixel":
            address, length, ids = params[0] | (params[1] << 8), params[2] | (params[3] << 8), params[4:]
        else:
            address, length, ids = params[0], params[1], params[2:]
        out = []
        with self._lock:
            for i in ids:
                if i not in self.positions or i in self._silent:
                    continue
                data = self._register(i, address, length)
                if data is None:
                    continue
                reply = self._status(i, data)
                if self._corrupt:
                    self._corrupt -= 1
                    reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
                out.append(reply)
        return out

    def _status(self, servo: int, data: bytes) -> bytes:
        if self.protocol == "dynamixel":
            payload = _stuff(bytes([0x55, 0x00]) + data)  # status instruction, no error
            n = len(payload) + 2
            head = bytes([0xFF, 0xFF, 0xFD, 0x00, servo, n & 0xFF, n >> 8]) + payload
            crc = crc16(head)
            return head + bytes([crc & 0xFF, crc >> 8])
        n = len(data) + 2
        body = bytes([servo, n, 0x00]) + data
        return b"\xff\xff" + body + bytes([(~sum(body)) & 0xFF])
