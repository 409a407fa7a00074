"""HIL-SERL's actor on the ROS 2 graph: :class:`GraphEnv`, the RL env contract of
:mod:`robot_policy.hil.rl.envs` over a running robot (``sim_node`` / ``robot_node``) and the
intervention arbiter (``arbiter_node``), with the simulated human acting through the arbiter.

Layer 7: it joins ``hil`` (the RL contract, the task's kinematics and expert) and ``ros`` (the
graph client, message conversion), both layer 6. docs/hil.md, "The actor on the ROS graph".
"""

from robot_policy.hil_graph.env import GraphEnv, GraphEnvConfig

__all__ = ["GraphEnv", "GraphEnvConfig"]
