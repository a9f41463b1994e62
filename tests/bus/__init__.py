"""Tests of the bus drivers."""
