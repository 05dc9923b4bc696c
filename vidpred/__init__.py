"""vidpred: multimodal video prediction with regularized latent-variable energy-based models.

`vidpred.load(checkpoint)` gives a trained predictor (vidpred/trained.py); the package imports
torch only when something that needs it is used, so the command lines refuse a bad option at once.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":
        from .trained import load
        return load
    raise AttributeError(f"module 'vidpred' has no attribute {name!r}")
