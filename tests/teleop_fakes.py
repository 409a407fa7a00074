"""Boundary fakes for teleop devices that cannot be attached here (no /dev/input, no USB HID).

They enforce the SDKs' documented contracts, so a device bug fails a test instead of passing:

- :class:`FakeHid` is cython-hidapi's ``hid`` module: ``enumerate()`` lists attached devices as
  dicts (path, vendor_id, product_id, ...); ``device().open_path(path)`` raises OSError for a
  path that is not attached; ``read``/``set_nonblocking`` on a device that is not open raise
  ValueError("not open"); ``read(n)`` returns at most ``n`` bytes of one input report, ``[]``
  when none is pending in non-blocking mode, and raises OSError("read error") once the device
  is unplugged. A blocking read with nothing pending would hang a control loop forever: it is a
  contract violation here.
- :class:`FakeJoystick` stands in for ``pygame.joystick.Joystick(i)`` (SDL has no virtual
  joystick here); everything else is the real pygame, including its event queue, into which the
  tests post real ``JOYAXISMOTION`` / ``JOYBUTTONDOWN`` / ``JOYDEVICEREMOVED`` events. It refuses
  use before ``pygame.joystick.init()``, an index beyond ``get_count()``, and any call after the
  pad was removed or quit (``pygame.error``, as SDL reports).
"""

from __future__ import annotations

from collections import deque


class ContractViolation(AssertionError):
    """A call the SDK's documentation does not allow."""


class _HidDevice:
    def __init__(self, hub: FakeHid):
        self.hub = hub
        self.opened = None
        self.nonblocking = False

    def open_path(self, path):
        dev = self.hub.devices.get(path)
        if dev is None or dev["unplugged"]:
            raise OSError("open failed")
        self.opened = dev
        self.hub.calls.append(("open_path", path))

    def open(self, vendor_id=0, product_id=0, serial_number=None):
        for path, d in self.hub.devices.items():
            if (d["info"]["vendor_id"], d["info"]["product_id"]) == (vendor_id, product_id):
                return self.open_path(path)
        raise OSError("open failed")

    def set_nonblocking(self, v):
        if self.opened is None:
            raise ValueError("not open")
        self.nonblocking = bool(v)

    def read(self, max_length, timeout_ms=0):
        if self.opened is None:
            raise ValueError("not open")
        if self.opened["unplugged"]:
            raise OSError("read error")
        q = self.opened["reports"]
        if not q:
            if not self.nonblocking and timeout_ms == 0:
                raise ContractViolation("blocking hid read with no report pending: would hang forever")
            return []
        return list(q.popleft())[:max_length]

    def close(self):
        self.opened = None


class FakeHid:
    """The ``hid`` module with synthesized devices: ``add(path, vid, pid)``, ``feed(path, report)``."""

    def __init__(self):
        self.devices: dict[bytes, dict] = {}
        self.calls: list[tuple] = []

    def add(self, path: bytes, vendor_id: int, product_id: int, product: str = "SpaceMouse") -> None:
        info = {
            "path": path,
            "vendor_id": vendor_id,
            "product_id": product_id,
            "serial_number": "",
            "release_number": 0x0100,
            "manufacturer_string": "3Dconnexion",
            "product_string": product,
            "usage_page": 1,
            "usage": 8,
            "interface_number": 0,
        }
        self.devices[path] = {"info": info, "reports": deque(), "unplugged": False}

    def feed(self, path: bytes, *reports) -> None:
        self.devices[path]["reports"].extend(bytes(r) for r in reports)

    def unplug(self, path: bytes) -> None:
        self.devices[path]["unplugged"] = True

    def enumerate(self, vendor_id=0, product_id=0):
        return [
            dict(d["info"])
            for d in self.devices.values()
            if not d["unplugged"]
            and vendor_id in (0, d["info"]["vendor_id"])
            and product_id in (0, d["info"]["product_id"])
        ]

    def device(self):
        return _HidDevice(self)


class FakeJoystick:
    """``pygame.joystick.Joystick(index)`` for a pad with ``axes`` axes and ``buttons`` buttons."""

    def __init__(
        self, pygame, index: int, count: int, axes: int = 6, buttons: int = 11, name="Xbox Controller"
    ):
        if not pygame.joystick.get_init():
            raise pygame.error("joystick system not initialized")
        if index >= count:
            raise pygame.error("Invalid joystick device number")
        self.pg = pygame
        self.index = index
        self.n_axes, self.n_buttons, self.name = axes, buttons, name
        self.alive = True

    def _check(self):
        if not self.alive:
            raise self.pg.error("Joystick not initialized")

    def init(self):
        self._check()

    def quit(self):
        self.alive = False

    def get_init(self):
        return self.alive

    def get_instance_id(self):
        self._check()
        return 100 + self.index  # SDL instance ids differ from device indices

    def get_name(self):
        self._check()
        return self.name

    def get_numaxes(self):
        self._check()
        return self.n_axes

    def get_numbuttons(self):
        self._check()
        return self.n_buttons

    def get_axis(self, i):
        raise ContractViolation("the gamepad device reads SDL events, it must not poll axes")

    get_button = get_axis
