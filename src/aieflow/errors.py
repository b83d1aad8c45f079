"""One exception hierarchy. Every error names where it happened, what is wrong and what would work."""

from __future__ import annotations


class AieflowError(Exception):
    """Base of every error aieflow raises on purpose; the CLI prints it as one line and exits 2."""

    def __init__(self, reason: str, *, node: str | None = None, hint: str | None = None):
        self.node = node
        self.reason = reason
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f"node '{self.node}': " if self.node else ""
        fix = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.reason}{fix}"


class ModelError(AieflowError):
    """The model file cannot be read or uses something the frontend does not support."""


class NumericsError(AieflowError):
    """A type, scale or mode that cannot be represented exactly."""


class MappingError(AieflowError):
    """No legal configuration or placement exists on the chosen device."""


class DeviceError(AieflowError):
    """An unknown device or a catalog entry that is missing a figure."""


class DesignError(AieflowError):
    """A saved design or an input array that does not match the design."""
