"""Suite-wide settings; the fixtures come from the ``pgtaskq.testing`` plugin."""
