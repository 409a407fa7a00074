"""``sim_node``: ``robot_node`` named ``sim`` with ``hardware:=sim_tabletop`` as its default.

Kept so existing launch files and scripts work. The simulated robot is the ``sim`` arm backend
(``robot_policy.robots.sim``) run by the generic node; a hardware config whose ``arm:`` is not
``sim`` runs that backend through the registry, never a silent simulation.
"""

from __future__ import annotations

from robot_policy.ros.robot_node import sim_main as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
