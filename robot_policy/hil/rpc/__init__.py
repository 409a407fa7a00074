"""Actor and learner as separate processes over gRPC (HIL-SERL's split), without pickle.

* :mod:`~robot_policy.hil.rpc.wire`: msgpack envelopes carrying safetensors bytes, checked on decode.
* :mod:`~robot_policy.hil.rpc.service`: the learner's gRPC server (generic handlers, token, size limits).
* :mod:`~robot_policy.hil.rpc.learner`: the training thread behind a bounded queue, weight publishing.
* :mod:`~robot_policy.hil.rpc.checkpoint`: atomic checkpoints (``LATEST`` pointer) for ``--resume``.
* :mod:`~robot_policy.hil.rpc.client`: the actor's client (deadlines) and outbox (seq numbers, bound, backoff).
* :mod:`~robot_policy.hil.rpc.actor`: the simulated actor process: env, policy, simulated human.

See docs/hil.md, "Actor and learner over gRPC".
"""
