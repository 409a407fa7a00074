"""robot_policy.serving: a policy over the network, speaking openpi's websocket protocol.

* ``server.PolicyServer`` (``robot-policy serve``): any predictor, normally the inference
  engine, behind websockets + msgpack-numpy, with a shared key, TLS, size limits, one
  inference at a time per model, a bounded queue, deadlines, ``/healthz`` and ``/readyz``.
* ``client.RemotePolicy``: the client, a ``Predictor`` (``predict``/``reset``/``config``)
  without torch; ``policy_node`` uses it when given ``server:=ws://HOST:PORT``.
* ``codec``: msgpack-numpy frames (openpi's encoding) with typed decoding, no pickle.
* ``protocol``: metadata, request options, error frames.

See docs/serving.md. Imported lazily: ``from robot_policy.serving import RemotePolicy`` loads
neither torch nor the server.
"""

from __future__ import annotations

__all__ = ["PolicyServer", "RemotePolicy", "ServerConfig", "ServerError", "ServerUnavailable"]

_WHERE = {
    "PolicyServer": "server",
    "ServerConfig": "server",
    "RemotePolicy": "client",
    "ServerError": "client",
    "ServerUnavailable": "client",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"robot_policy.serving.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'robot_policy.serving' has no attribute {name!r}")
