"""The policy core: the routing contract, the cost model and the plugin registry (no sglang/torch)."""
