"""Developer tools that need Qt: the README screenshot and the icon generator."""
