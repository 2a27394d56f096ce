"""Feature extraction: video decoding and C3D, annotation reading and word vectors."""
