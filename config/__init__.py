"""Server configuration shared by the web process, the workers and the CLI (reads the environment)."""
