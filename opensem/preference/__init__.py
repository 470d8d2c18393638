"""The preference stage (`opensem prefer`): an SFT adapter trained further on chosen/rejected
answers with TRL's DPOTrainer. See stage.py."""

from opensem.preference.stage import run

__all__ = ["run"]
