"""largemodel package."""
