"""One small runner per segmentation method; the methods table (`seam.service.engine.methods`)
names which runner a method uses. A runner sees the engine only through `host.MethodHost`."""
