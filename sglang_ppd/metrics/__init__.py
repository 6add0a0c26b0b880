"""Per-request records and vLLM-definition summaries shared by the simulator and the live replayer."""
