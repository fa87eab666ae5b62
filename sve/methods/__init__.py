"""The ensemble methods, one module each, under one call shape (see ``registry``):

    build(name, backbone, num_members, num_classes, **options) -> EnsembleModel   # logits (B, M, C)

- ``sve``: Singular Value Ensembles (``wrap``, ``SVELayer``, ``spectra``) — the method itself;
- ``lora_ensemble``, ``batch_ensemble``: per-member layers for ``sve.ensemble.wrap_with``;
- ``deep_ensemble``, ``mc_dropout``, ``head_ensemble``: models without per-member layers;
- ``registry``: ``METHODS`` (description, default lr, options), ``build``, ``default_lr``;
- ``multiple_choice``: a decoder LM's answer-token logits as every method's head (``answer_tokens``),
  prompts from multiple-choice or classification text sets.
"""

from sve.methods.batch_ensemble import BatchEnsembleLayer
from sve.methods.deep_ensemble import DeepEnsemble, stack
from sve.methods.head_ensemble import HeadEnsemble
from sve.methods.lora_ensemble import LoRALayer
from sve.methods.mc_dropout import MCDropout
from sve.methods.multiple_choice import answer_token_ids, as_multiple_choice
from sve.methods.registry import METHODS, MethodInfo, build, default_lr
from sve.methods.sve import SVELayer, set_mode, spectra, wrap

__all__ = ["METHODS", "MethodInfo", "build", "default_lr", "stack", "LoRALayer", "BatchEnsembleLayer",
           "DeepEnsemble", "MCDropout", "HeadEnsemble", "SVELayer", "wrap", "set_mode", "spectra",
           "answer_token_ids", "as_multiple_choice"]
