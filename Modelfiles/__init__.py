"""The catalog: one YAML recipe per model name, shipped as package data."""
