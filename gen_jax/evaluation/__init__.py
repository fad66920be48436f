"""Metrics and pictures shared by every family."""
