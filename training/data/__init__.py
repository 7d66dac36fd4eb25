"""Training data: image-level labelled sets (`datasets`: VOC12 train_aug, image folders,
synthetic VOC-layout sets), the authors' augmentation (`augment`), deterministic
batching (`loader`), the synthetic generator (`synth`).

Nothing is imported here so that `seam.training.data.synth` stays torch-free.
"""
