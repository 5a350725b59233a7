"""Measurements of students and synthetic sets."""
