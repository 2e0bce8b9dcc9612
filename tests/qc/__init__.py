"""Tests of the quality-control engine."""
