"""Human-in-the-loop RL (HIL-SERL / RLIF): RLPD/SAC agent, replay buffers, reward classifier,
gripper critic, simulated human and the in-process simulated experiment."""
