"""Utilities every stage uses: crash-safe file writes and progress bars.

This subpackage imports no other part of ifskeras, so any stage may import it.
"""
