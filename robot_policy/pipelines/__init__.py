"""Applications built on the simulation: scripted-expert collection and replay, adaptive
domain-randomization schedules. They sit above ``sim`` (physics), ``data``, ``policies`` and
``evaluation``, which never import them."""
