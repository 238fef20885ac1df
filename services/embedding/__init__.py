"""The sentence-transformer encoder and its int8 ONNX form; torch lives here and in training."""
