"""A local stand-in for the OpenAI Batch + Files API: `python -m simulator --help`."""

from .engine import ApiError, Clock, Simulator
from .server import FAULT_KINDS, SimulatorServer

__all__ = ["ApiError", "Clock", "FAULT_KINDS", "Simulator", "SimulatorServer"]
