"""hsc: video paragraph grounding with HSCNet (Hierarchical Semantic Correspondence Networks)."""

__version__ = "0.1.0"
