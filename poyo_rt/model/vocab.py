"""An embedding whose vocabulary (unit or session ids, as strings) travels with the weights.

Compatible with torch_brain's ``InfiniteVocabEmbedding``: the state dict holds
``weight`` (V, dim) and ``vocab`` (an OrderedDict word -> row, ``"NA"`` at row 0, the
padding row). Loading a state dict into an initialised module remaps rows by word, so
checkpoints whose vocabulary lists the same words in another order load correctly.
The module doubles as the tokenizer (:meth:`tokenizer`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import UninitializedParameter

PAD_WORD = "NA"


class InfiniteVocabEmbedding(nn.Module):
    """Lazily sized embedding table keyed by words.

    The weight is an :class:`UninitializedParameter` until :meth:`initialize_vocab` is
    called or a state dict carrying a vocabulary is loaded.

    Args:
        embedding_dim: width of each embedding.
        init_scale: std of the normal initialisation (row 0, the padding row, is zero).
    """

    def __init__(self, embedding_dim: int, init_scale: float = 0.02):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.init_scale = init_scale
        self.padding_idx = 0
        self.weight = UninitializedParameter()
        self.vocab: OrderedDict[str, int] | None = None
        self._register_load_state_dict_pre_hook(self._hook_vocab_on_load_state_dict, with_module=False)

    # --- vocabulary management -------------------------------------------------------
    def initialize_vocab(self, vocab: Iterable[str]) -> None:
        """Create the vocabulary ``{"NA": 0, vocab[0]: 1, ...}`` and a fresh weight."""
        if self.vocab is not None:
            raise ValueError(
                f"Vocabulary already initialized, and has {len(self.vocab)} words. "
                "If you want to add new words to the vocabulary, use extend_vocab() instead."
            )
        if isinstance(vocab, str) or not isinstance(vocab, Iterable):
            raise ValueError(f"vocab must be a list of words, got {type(vocab).__name__}")
        words = list(vocab)
        if len(words) != len(set(words)):
            raise ValueError("Vocabulary contains duplicate words")
        if PAD_WORD in words:
            raise ValueError(f"{PAD_WORD!r} is a reserved word (the padding row)")
        self.vocab = OrderedDict([(PAD_WORD, 0)])
        self.vocab.update((w, i + 1) for i, w in enumerate(words))
        self.initialize_parameters(len(self.vocab))

    def extend_vocab(self, vocab: Iterable[str], exist_ok: bool = False) -> "InfiniteVocabEmbedding":
        """Append new words (randomly initialised rows); existing rows are kept."""
        if self.is_lazy():
            raise ValueError("No vocabulary was initialized. Use initialize_vocab()")
        words = list(vocab)
        existing = [w for w in words if w in self.vocab]
        if existing and not exist_ok:
            raise ValueError(
                f"Vocabulary already contains {len(existing)} out of {len(words)} words that are being "
                f"added (e.g. {existing[:3]}). Pass exist_ok=True to skip them."
            )
        new_words = list(dict.fromkeys(w for w in words if w not in self.vocab))
        old = self.weight.detach().clone()
        for w in new_words:
            self.vocab[w] = len(self.vocab)
        self.weight = UninitializedParameter(device=old.device, dtype=old.dtype)
        self.initialize_parameters(len(self.vocab))
        with torch.no_grad():
            self.weight[: len(old)] = old
        return self

    def subset_vocab(self, vocab: Iterable[str], inplace: bool = True) -> "InfiniteVocabEmbedding":
        """Keep only ``vocab`` (in that order), copying their rows; ids are renumbered."""
        if self.is_lazy():
            raise ValueError("No vocabulary was initialized. Use initialize_vocab()")
        words = list(vocab)
        if not words:
            raise ValueError("Vocabulary must contain at least one word.")
        if len(words) != len(set(words)):
            raise ValueError("Vocabulary contains duplicate words")
        missing = [w for w in words if w not in self.vocab]
        if missing:
            raise ValueError(f"Vocabulary does not contain word(s) {missing[:5]}")
        rows = torch.tensor([0] + self.tokenizer(words), dtype=torch.long)
        with torch.no_grad():
            selected = self.weight[rows].clone()
        target = self if inplace else self.__class__(self.embedding_dim, self.init_scale)
        target.vocab = None
        target.weight = UninitializedParameter()
        target.initialize_vocab(words)
        target.weight.data = selected
        return target

    def tokenizer(self, words: str | Iterable[str]) -> int | list[int]:
        """Row index of a word, or a list of them. Unknown words raise ``KeyError`` naming the word."""
        if self.is_lazy():
            raise ValueError("No vocabulary was initialized. Use initialize_vocab()")
        if isinstance(words, str):
            return self._index(words)
        return [self._index(w) for w in words]

    def _index(self, word: str) -> int:
        try:
            return self.vocab[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary ({len(self.vocab) - 1} words)") from None

    def detokenizer(self, index: int) -> str:
        """Word at row ``index``."""
        if self.is_lazy():
            raise ValueError("No vocabulary was initialized. Use initialize_vocab()")
        return list(self.vocab.keys())[index]

    def is_lazy(self) -> bool:
        """True until the vocabulary (and weight) exist."""
        return isinstance(self.weight, UninitializedParameter)

    # --- parameters ------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Normal(0, init_scale) rows, padding row zeroed; the vocabulary is kept."""
        if not self.is_lazy():
            nn.init.normal_(self.weight, mean=0.0, std=self.init_scale)
            with torch.no_grad():
                self.weight[self.padding_idx].fill_(0)

    def initialize_parameters(self, num_embeddings: int) -> None:
        if self.is_lazy():
            with torch.no_grad():
                self.weight.materialize((num_embeddings, self.embedding_dim))
                self.reset_parameters()

    # --- state dict ------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.is_lazy():
            destination[prefix + "weight"] = self.weight
        else:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "vocab"] = self.vocab.copy() if self.vocab is not None else None

    def _hook_vocab_on_load_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        vocab_key, weight_key = prefix + "vocab", prefix + "weight"
        if vocab_key not in state_dict:
            return  # reported as a missing key by load_state_dict
        incoming = state_dict.pop(vocab_key)
        if not self.is_lazy():
            if incoming is None:
                raise ValueError(f"{vocab_key}: checkpoint has no vocabulary but the module has one")
            incoming = OrderedDict(incoming)
            missing = [w for w in self.vocab if w not in incoming]
            extra = [w for w in incoming if w not in self.vocab]
            if missing or extra:
                raise ValueError(
                    f"Vocabulary mismatch in {prefix or 'embedding'}: {len(missing)} word(s) missing from the "
                    f"checkpoint (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}). To change the "
                    "vocabulary, load without initialize_vocab(), then use extend_vocab() / subset_vocab()."
                )
            remap = torch.tensor([incoming[w] for w in self.vocab], dtype=torch.long)
            state_dict[weight_key] = state_dict[weight_key][remap]
        elif weight_key in state_dict and not isinstance(state_dict[weight_key], UninitializedParameter):
            with torch.no_grad():
                self.weight.materialize(state_dict[weight_key].shape)
            self.vocab = OrderedDict(incoming)
        elif incoming is not None:
            raise ValueError(f"{vocab_key}: checkpoint has a vocabulary but no weight")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``(...,)`` row indices -> ``(..., embedding_dim)``."""
        if self.is_lazy():
            raise ValueError("No vocabulary was initialized. Use initialize_vocab()")
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        n = len(self.vocab) if self.vocab is not None else 0
        return f"embedding_dim={self.embedding_dim}, num_embeddings={n}"
