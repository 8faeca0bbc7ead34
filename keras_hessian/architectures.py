"""Real architectures, built from small configs with no weight download, for tests, benchmarks and examples.

Three kinds of graph that hand-written Sequential models do not exercise: `keras.applications`'
MobileNetV2 (depthwise convolutions, BatchNorm, residual `Add` layers), a functional transformer
encoder written with operator syntax and `keras.ops` between layers (`x + y` residuals, positional
embeddings), and a KerasHub BERT classifier (a nested backbone, three inputs, `EinsumDense` inside
`MultiHeadAttention`). The real inputs are sklearn's digits: `keras_hessian.data.load_digits_rgb`
for the images, `load_digits_tokens` for the token models.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_hessian._validation import check_int

__all__ = ["bert_inputs", "keras_hub_bert_classifier", "mobilenet_v2", "transformer_classifier"]


def mobilenet_v2(input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10, alpha: float = 0.35) -> keras.Model:
    """`keras.applications.MobileNetV2` with `weights=None`: about 410k parameters at alpha 0.35, 32x32 inputs."""
    return keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=alpha, weights=None, classes=classes, classifier_activation=None
    )


def transformer_classifier(
    vocabulary_size: int = 17,
    sequence_length: int = 64,
    dim: int = 32,
    heads: int = 2,
    blocks: int = 2,
    classes: int = 10,
) -> keras.Model:
    """A functional transformer encoder over integer tokens, logits out.

    Token and positional embeddings are summed with `+`, each block is post-norm attention and a
    feed-forward pair with `x + y` residuals, then mean pooling and a linear classifier.
    """
    vocabulary_size = check_int("vocabulary_size", vocabulary_size, minimum=2)
    sequence_length = check_int("sequence_length", sequence_length, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    heads = check_int("heads", heads, minimum=1)
    blocks = check_int("blocks", blocks, minimum=1)
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocabulary_size, dim, name="token_embedding")(tokens)
    # Positions derived from the symbolic input, so the positional embedding is a node of the graph
    # (trained, cloned, quantized) rather than a constant computed once at build time.
    positions = keras.ops.ones_like(tokens) * keras.ops.arange(sequence_length, dtype="int32")
    h = h + keras.layers.Embedding(sequence_length, dim, name="position_embedding")(positions)
    for i in range(blocks):
        attention = keras.layers.MultiHeadAttention(heads, dim // heads, name=f"block_{i}_attention")(h, h)
        h = keras.layers.LayerNormalization(name=f"block_{i}_norm_1")(h + attention)
        y = keras.layers.Dense(2 * dim, activation="relu", name=f"block_{i}_ffn_1")(h)
        y = keras.layers.Dense(dim, name=f"block_{i}_ffn_2")(y)
        h = keras.layers.LayerNormalization(name=f"block_{i}_norm_2")(h + y)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    logits = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(tokens, logits, name="transformer_classifier")


def keras_hub_bert_classifier(
    vocabulary_size: int = 17,
    sequence_length: int = 64,
    layers: int = 2,
    heads: int = 2,
    hidden_dim: int = 32,
    classes: int = 10,
) -> keras.Model:
    """A KerasHub `BertTextClassifier` on a 2-layer backbone built from a small config (no download).

    Its inputs are the dict of `bert_inputs`: `token_ids`, `segment_ids` and `padding_mask`.
    Needs `keras-hub` (`pip install ".[hub]"`).
    """
    try:
        import keras_hub
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('keras_hub_bert_classifier needs keras-hub: pip install ".[hub]"') from error
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=check_int("vocabulary_size", vocabulary_size, minimum=2),
        num_layers=check_int("layers", layers, minimum=1),
        num_heads=check_int("heads", heads, minimum=1),
        hidden_dim=check_int("hidden_dim", hidden_dim, minimum=1),
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=check_int("sequence_length", sequence_length, minimum=1),
        dropout=0.0,
        name="bert_backbone",  # fixed names: layer paths stay the same however many models a session builds
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=check_int("classes", classes, minimum=2), preprocessor=None, activation=None,
        dropout=0.0, name="bert_text_classifier",
    )


def bert_inputs(tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The input dict of a KerasHub BERT model for integer `tokens` of shape `(n, length)`: one segment, no padding."""
    tokens = np.asarray(tokens, dtype="int32")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (n, length). Received shape {tokens.shape}.")
    return {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": np.ones_like(tokens)}
