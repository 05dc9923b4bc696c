"""vidpred: multimodal video prediction with regularized latent-variable energy-based models."""

__version__ = "0.1.0"
