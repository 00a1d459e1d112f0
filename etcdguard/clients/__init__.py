"""One small typed facade per external system; each SDK is imported by its own facade only."""
