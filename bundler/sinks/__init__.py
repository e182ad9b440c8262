"""Image sinks: each consumes image.Image values (the Sink protocol in bundler.source)."""
