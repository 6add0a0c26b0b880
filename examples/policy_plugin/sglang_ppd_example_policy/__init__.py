"""An example sglang_ppd policy plugin (see README.md)."""
