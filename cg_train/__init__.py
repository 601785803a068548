"""cg-train: one training engine for label-noise and learning-dynamics research, ImageNet down to CIFAR."""
__version__ = "0.1.0"
