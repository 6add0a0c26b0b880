"""Wire formats spoken between the router, SGLang workers, the worker extension and the emulator."""
