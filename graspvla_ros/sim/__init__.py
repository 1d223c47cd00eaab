"""Simulation: franky-sim (MuJoCo, libfranka protocol) embedded in-process, and the table world."""
