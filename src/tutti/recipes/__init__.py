"""Workflows (setup -> run -> report) wired from library components."""
