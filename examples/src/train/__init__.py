"""DVC pipeline stages: prepare -> train -> evaluate."""
