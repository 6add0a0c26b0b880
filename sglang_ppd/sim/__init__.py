"""The discrete-event PD-cluster simulator (``sglang-ppd sim``) and its clock-free worker scheduler."""
