"""An example advbench plugin (advbench's docs/guides/plugins.md): see plugin.py and configs/."""
