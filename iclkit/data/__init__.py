"""Tasks: specs read from YAML, their data sources (one registered loader per kind), and the built-in tasks."""
