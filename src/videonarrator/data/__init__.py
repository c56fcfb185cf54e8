"""Dataset sources that produce the internal schema (videonarrator.schema)."""
