"""Special token ids shared by every subword tokenizer and translation model.

Kept free of heavy imports so that ``models/`` can use the ids without importing
SentencePiece or tensorflow-text. Padding must be 0: Keras ``mask_zero`` embeddings
and ``RaggedTensor.to_tensor()`` / ``padded_batch`` pad and mask with 0.
"""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
