"""An example advbench plugin (README, "Plugins"): see plugin.py and configs/."""
