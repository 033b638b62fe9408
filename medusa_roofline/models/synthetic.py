"""A synthetic, locally generated language with learnable structure, for a model trained in seconds.

Text is lowercase "words" separated by spaces, grouped into sentences ending in ``.``. The lexicon
is a fixed set of random letter strings (2-6 letters); the next word follows a first-order Markov
chain in which every word has a few successors with skewed probabilities (default 0.6/0.3/0.1),
and sentences end after 4-8 words. So:

* inside a word every letter after the first few is determined by the word (learnable exactly);
* at a word boundary the next word is uncertain but skewed (a model's greedy choice is well defined);
* nothing is memorised from anywhere: the lexicon and chain come from one seeded generator.

Tokens are characters: ``<pad>``, ``<bos>``, ``<unk>``, space, ``.``, ``a``-``z`` (31 ids). :func:`char_tokenizer`
builds the matching Hugging Face tokenizer (prepends ``<bos>``), saved beside the model so prompt
files can be plain text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ..core.errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<unk>")
SYMBOLS = (*SPECIALS, " ", ".", *string.ascii_lowercase)
PAD, BOS, UNK = 0, 1, 2
SENTENCE_WORDS = (4, 8)


@dataclass(frozen=True)
class Language:
    words: tuple[str, ...]
    successors: tuple[tuple[int, ...], ...]  # per word: indices of the words that may follow
    probs: tuple[float, ...]  # probability of each successor slot

    @property
    def vocab_size(self) -> int:
        return len(SYMBOLS)


def make_language(seed: int = 0, n_words: int = 24, word_len=(2, 6), probs=(0.6, 0.3, 0.1)) -> Language:
    """A lexicon of ``n_words`` distinct random words and a successor chain, from one seeded generator."""
    if n_words < len(probs) or len(probs) < 1 or abs(sum(probs) - 1.0) > 1e-9 or min(probs) <= 0:
        raise ConfigError(f"demo.language: need n_words >= {len(probs)} and successor probabilities > 0 "
                          f"summing to 1, got n_words={n_words}, probs={list(probs)}")
    rng = np.random.default_rng(seed)
    letters = list(string.ascii_lowercase)
    words: list[str] = []
    while len(words) < n_words:
        word = "".join(rng.choice(letters, int(rng.integers(word_len[0], word_len[1] + 1))))
        if word not in words:
            words.append(word)
    successors = tuple(tuple(int(j) for j in rng.choice(n_words, len(probs), replace=False)) for _ in words)
    return Language(tuple(words), successors, tuple(float(p) for p in probs))


def sample_text(lang: Language, rng: np.random.Generator, n_chars: int) -> str:
    """``n_chars`` characters of running text (cut mid-word at the end), starting at a sentence start."""
    out: list[str] = []
    size = 0
    word, in_sentence = int(rng.integers(len(lang.words))), 0
    length = int(rng.integers(SENTENCE_WORDS[0], SENTENCE_WORDS[1] + 1))
    while size < n_chars:
        piece = lang.words[word]
        in_sentence += 1
        if in_sentence >= length:
            piece += ". "
            word, in_sentence = int(rng.integers(len(lang.words))), 0
            length = int(rng.integers(SENTENCE_WORDS[0], SENTENCE_WORDS[1] + 1))
        else:
            piece += " "
            word = lang.successors[word][int(rng.choice(len(lang.probs), p=lang.probs))]
        out.append(piece)
        size += len(piece)
    return "".join(out)[:n_chars]


_INDEX = {s: i for i, s in enumerate(SYMBOLS)}


def encode(text: str) -> list[int]:
    """``<bos>`` then one id per character (what :func:`char_tokenizer` produces)."""
    try:
        return [BOS] + [_INDEX[c] for c in text]
    except KeyError as exc:
        raise ConfigError(f"demo: character {exc.args[0]!r} is not in the synthetic alphabet") from None


def decode(ids) -> str:
    return "".join(SYMBOLS[i] for i in ids if i >= len(SPECIALS))


def sample_batch(lang: Language, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """``[batch, length]`` token ids, each row ``<bos>`` + ``length - 1`` characters of text."""
    return np.array([encode(sample_text(lang, rng, length - 1)) for _ in range(batch)], dtype=np.int64)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer of :data:`SYMBOLS` (``<bos>`` prepended), as a HF fast tokenizer."""
    tok = Tokenizer(models.WordLevel({s: i for i, s in enumerate(SYMBOLS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")
