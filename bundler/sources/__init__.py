"""Image sources: each yields image.Image values for the bundle writer."""
