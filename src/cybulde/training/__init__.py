"""Training: launch checks, determinism, the LightningModule and the `train` stage function.

Training never reaches a model hub: the offline switch is set here, before any module of the package
imports Lightning, which imports transformers, which reads `HF_HUB_OFFLINE` once, when imported.
"""

from cybulde.models.backbone import set_offline

set_offline()
