"""Corrections that come back from the labelling tools: the store (`store.py`, per project the
latest corrected mask and image-level labels of each image, in the data directory) and the
training data of a fit made from it (`fit_data.py`). The tools' formats (Label Studio
annotations, CVAT export zips) are read in seam.service.integrations; the fit is submitted as a
training job (seam.service.trainings)."""
