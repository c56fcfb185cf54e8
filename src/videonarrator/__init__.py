"""VideoNarrator: synchronized video storytelling (Yang et al., ACL 2024), reimplemented."""
__version__ = "0.1.0"
