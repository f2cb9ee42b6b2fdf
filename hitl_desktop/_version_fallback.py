"""Version used when package metadata is unavailable (frozen builds write this file from pyproject.toml)."""
VERSION = "0.1.0"
