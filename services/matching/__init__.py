"""Answer matching: the FAQ knowledge base, the matcher and its calibration."""
