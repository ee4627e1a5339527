"""polydiff-text: the ``text`` modality plugin (token sequences: natural language, SMILES,
protein sequences).

- :mod:`.tokenizers`: character, BPE (trained offline with ``tokenizers``), SMILES and
  amino-acid tokenizers, saved with the model as JSON;
- :mod:`.data`: readers of plain text, JSONL, FASTA and SMILES files, the embedded default
  (RDKit's bundled NCI SMILES) and tiny Shakespeare from ``shared/``, sequence datasets;
- :mod:`.models`: a bidirectional transformer for masked diffusion (rotary embeddings on
  ``scaled_dot_product_attention``, SUBS outputs) and an autoregressive transformer of the
  same size (baseline and reference for generative perplexity);
- :mod:`.edlm`: EDLM's importance sampler (``edlm``) with an autoregressive or a residual energy;
- :mod:`.energy`: the residual energy network and its NCE objective (``edlm_nce``);
- :mod:`.generation`: prompts, infilling and semi-autoregressive long texts (``polydiff text complete``);
- :mod:`.metrics`: unigram entropy, SMILES validity / uniqueness / novelty, generative perplexity;
- :mod:`.modality`: the plugin class.
"""

from __future__ import annotations

__all__ = ["TextModality"]


def __getattr__(name: str):
    if name == "TextModality":
        from .modality import TextModality

        return TextModality
    raise AttributeError(name)
