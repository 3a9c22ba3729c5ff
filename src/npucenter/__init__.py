"""npucenter: run an AI inference computing center of NPUs and GPUs.

Four faces (control plane, gateway, proving ground, digital twin), one brain (the policy objects
in :mod:`npucenter.policy`, shared by the live center and the simulator).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
