"""Backbones: the :class:`Backbone` contract (``base``), the offline zoo and hub pass-through
(``zoo``: ``load_backbone``), and the converters of the zoo's shipped files (``convert``).

A :class:`Backbone` is a frozen pretrained *trunk* plus everything a classification head needs to
sit on it: its preprocessing (image size and mean/std, or a tokenizer and a max length), the width
of its pooled feature and the pooling rule, and the names of its repeated blocks (so that
``targets="last:K"`` can pick the last K blocks).
"""

from sve.backbones.base import (
    DEFAULT_POOLING,
    FAMILIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POOLINGS,
    Backbone,
    find_blocks,
    from_model,
)
from sve.backbones.zoo import ZOO, ZooEntry, backbone_info, describe_source, list_backbones, load_backbone

__all__ = ["Backbone", "from_model", "find_blocks", "load_backbone", "list_backbones", "backbone_info",
           "describe_source", "ZOO",
           "ZooEntry", "FAMILIES", "POOLINGS", "DEFAULT_POOLING", "IMAGENET_MEAN", "IMAGENET_STD"]
