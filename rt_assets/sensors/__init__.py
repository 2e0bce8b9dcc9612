"""Sensors that start work when data arrives."""
