"""poppyscan: find opium-poppy plots in drone orthomosaics and turn them into field work."""

__version__ = "0.1.0"
