"""Machines drorch reaches: this one (`local`) or others over SSH."""
