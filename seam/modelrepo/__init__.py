"""The model contract between training and serving, torch-free: the manifest schema that
`seam export` writes beside each ONNX graph (`manifest`, `precision`), the onnxruntime session
factory both sides use (`runtime`), and the blocked PCM runner (`pcm`). Training writes and
checks models with it; the service loads them with it; neither imports the other."""
