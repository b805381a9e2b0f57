"""helpline's core: one process that turns every support channel into one conversation stream."""

__version__ = "0.1.0"
