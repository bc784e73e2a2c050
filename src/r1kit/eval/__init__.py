"""Evaluation: answers and their checking, metrics, suites, backends (local model or endpoint), reports."""
