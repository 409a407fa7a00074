"""Human in the loop beyond the arbiter: learning from corrections (HG-DAgger in simulation)."""
